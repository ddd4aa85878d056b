//! Actors' names across a cluster's jobs, as the head keeps them: a name is unique in its
//! namespace among the live actors of every job (Ray's rule). A job's driver claims a name
//! before it creates the named actor ([`prism_transport::ToControl::ClaimName`]); the claim
//! goes when the driver says the actor died, when the job's directory shows it dead, or when
//! the job ends or is counted failed. Within one job the driver's own table decides (it asks
//! the head only for a name it does not hold), so a job's claim replaces its own older one.
//! Sans-IO: the head's control store asks the directory whether a holder still lives.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use prism_graph::ActorId;

/// Whether the actor a claim names still holds its name, as the directory knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Holder {
    /// Its job runs and the actor is not known dead.
    Live,
    /// Its job ended or failed, or the actor died.
    Gone,
    /// The directory does not know the job (yet: a job's first listing may come after its
    /// first claim).
    Unknown,
}

/// What a restarted head keeps of a claim.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct SavedClaim {
    namespace: String,
    name: String,
    job: String,
    actor: ActorId,
    #[serde(default)]
    class: String,
}

#[derive(Debug, Clone)]
struct Claim {
    job: String,
    actor: ActorId,
    class: String,
    /// When it was made (or recovered): a claim of a job the directory does not know lives
    /// a job's timeout from then.
    at: Instant,
}

/// Every claimed name, by namespace and name.
#[derive(Debug)]
pub(crate) struct NameClaims {
    claims: BTreeMap<(String, String), Claim>,
    /// How long a claim of a job the directory does not know holds.
    unknown_for: Duration,
    changed: bool,
}

impl NameClaims {
    /// No claims; one of a job the directory does not know holds for `unknown_for`.
    pub(crate) fn new(unknown_for: Duration) -> Self {
        NameClaims {
            claims: BTreeMap::new(),
            unknown_for,
            changed: false,
        }
    }

    /// The `saved` claims, each counted made at `now`.
    pub(crate) fn recover(unknown_for: Duration, saved: Vec<SavedClaim>, now: Instant) -> Self {
        let mut names = Self::new(unknown_for);
        for claim in saved {
            let (job, actor, class, at) = (claim.job, claim.actor, claim.class, now);
            let claim_of = Claim {
                job,
                actor,
                class,
                at,
            };
            names.claims.insert((claim.namespace, claim.name), claim_of);
        }
        names
    }

    /// What to save.
    pub(crate) fn snapshot(&self) -> Vec<SavedClaim> {
        let saved = self
            .claims
            .iter()
            .map(|((namespace, name), claim)| SavedClaim {
                namespace: namespace.clone(),
                name: name.clone(),
                job: claim.job.clone(),
                actor: claim.actor,
                class: claim.class.clone(),
            });
        saved.collect()
    }

    /// Whether the claims changed since the last call.
    pub(crate) fn changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// Job `job` claims `name` in `namespace` for `actor` (of class `class`) at `now`: taken
    /// (`Ok`), or the job whose live actor holds it (`Err`). `holder` says whether a claim's
    /// actor still lives.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn claim(
        &mut self,
        job: &str,
        namespace: &str,
        name: &str,
        actor: ActorId,
        class: &str,
        now: Instant,
        holder: impl Fn(&str, ActorId) -> Holder,
    ) -> Result<(), String> {
        let key = (namespace.to_string(), name.to_string());
        if let Some(held) = self.claims.get(&key)
            && held.job != job
            && self.holds(held, now, &holder)
        {
            return Err(held.job.clone());
        }
        let claim = Claim {
            job: job.to_string(),
            actor,
            class: class.to_string(),
            at: now,
        };
        tracing::debug!(job, namespace, name, actor = %actor, "actor name claimed");
        self.claims.insert(key, claim);
        self.changed = true;
        Ok(())
    }

    /// Job `job`'s actor `actor` died: its claim on `name` in `namespace` goes, if it is
    /// still that actor's.
    pub(crate) fn release(&mut self, job: &str, namespace: &str, name: &str, actor: ActorId) {
        let key = (namespace.to_string(), name.to_string());
        if self
            .claims
            .get(&key)
            .is_some_and(|c| c.job == job && c.actor == actor)
        {
            self.claims.remove(&key);
            self.changed = true;
        }
    }

    /// The job, id and class of the live actor that has `name` in `namespace`, if one has.
    pub(crate) fn find(
        &self,
        namespace: &str,
        name: &str,
        now: Instant,
        holder: impl Fn(&str, ActorId) -> Holder,
    ) -> Option<(String, ActorId, String)> {
        let claim = self
            .claims
            .get(&(namespace.to_string(), name.to_string()))?;
        (self.holds(claim, now, holder))
            .then(|| (claim.job.clone(), claim.actor, claim.class.clone()))
    }

    /// Drops the claims whose actors no longer hold them.
    pub(crate) fn prune(&mut self, now: Instant, holder: impl Fn(&str, ActorId) -> Holder) {
        let before = self.claims.len();
        let claims = std::mem::take(&mut self.claims);
        self.claims = (claims.into_iter())
            .filter(|(_, claim)| self.holds(claim, now, &holder))
            .collect();
        self.changed |= self.claims.len() != before;
    }

    /// How many names are claimed.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.claims.len()
    }

    fn holds(&self, claim: &Claim, now: Instant, holder: impl Fn(&str, ActorId) -> Holder) -> bool {
        match holder(&claim.job, claim.actor) {
            Holder::Live => true,
            Holder::Gone => false,
            Holder::Unknown => now.saturating_duration_since(claim.at) < self.unknown_for,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actor(n: u64) -> ActorId {
        ActorId(prism_graph::TaskId::new(0, n))
    }

    #[test]
    fn a_name_is_one_job_s_until_its_actor_dies_or_its_job_ends() {
        let t0 = Instant::now();
        let mut names = NameClaims::new(Duration::from_secs(5));
        let live = |_: &str, _: ActorId| Holder::Live;
        assert_eq!(
            names.claim("a", "svc", "c", actor(1), "C", t0, live),
            Ok(())
        );
        // Another job is refused, named the holder; another namespace is another name.
        let taken = names.claim("b", "svc", "c", actor(2), "C", t0, live);
        assert_eq!(taken, Err("a".to_string()));
        assert_eq!(
            names.claim("b", "other", "c", actor(2), "C", t0, live),
            Ok(())
        );
        // The holder's own job claims again for a new actor (its table said it is free).
        assert_eq!(
            names.claim("a", "svc", "c", actor(3), "C", t0, live),
            Ok(())
        );
        // A release of the old actor leaves the new claim; the new actor's frees it.
        names.release("a", "svc", "c", actor(1));
        assert_eq!(
            names.claim("b", "svc", "c", actor(2), "C", t0, live),
            Err("a".into())
        );
        names.release("b", "svc", "c", actor(3));
        assert_eq!(
            names.claim("b", "svc", "c", actor(2), "C", t0, live),
            Err("a".into())
        );
        names.release("a", "svc", "c", actor(3));
        assert_eq!(
            names.claim("b", "svc", "c", actor(2), "C", t0, live),
            Ok(())
        );
        // Job b's actor is known dead (its release lost): the name is free for a.
        let b_dead = |job: &str, _: ActorId| match job {
            "b" => Holder::Gone,
            _ => Holder::Live,
        };
        assert_eq!(
            names.claim("a", "svc", "c", actor(4), "C", t0, b_dead),
            Ok(())
        );
        // Found while it holds.
        let found = names.find("svc", "c", t0, live);
        assert_eq!(found, Some(("a".into(), actor(4), "C".into())));
        assert_eq!(names.find("svc", "c", t0, |_, _| Holder::Gone), None);
        // Pruning drops what the directory says is gone.
        names.prune(t0, |_, _| Holder::Gone);
        assert_eq!(names.len(), 0);
        assert!(names.changed());
        assert!(!names.changed());
    }

    #[test]
    fn a_claim_of_a_job_the_directory_does_not_know_holds_a_timeout_and_survives_a_restart() {
        let t0 = Instant::now();
        let timeout = Duration::from_secs(5);
        let mut names = NameClaims::new(timeout);
        let unknown = |_: &str, _: ActorId| Holder::Unknown;
        assert_eq!(
            names.claim("a", "svc", "c", actor(1), "C", t0, unknown),
            Ok(())
        );
        let later = t0 + Duration::from_secs(4);
        assert_eq!(
            names.claim("b", "svc", "c", actor(2), "C", later, unknown),
            Err("a".into())
        );
        // A restarted head counts recovered claims made at its start.
        let t1 = t0 + Duration::from_secs(60);
        let mut names = NameClaims::recover(timeout, names.snapshot(), t1);
        assert_eq!(
            names.claim("b", "svc", "c", actor(2), "C", t1, unknown),
            Err("a".into())
        );
        let late = t1 + timeout;
        assert_eq!(
            names.claim("b", "svc", "c", actor(2), "C", late, unknown),
            Ok(())
        );
    }
}

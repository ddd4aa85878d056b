//! The observation filter of ES and PPO (RLlib's `MeanStdFilter`): observations are
//! standardised by a running mean and standard deviation. Workers standardise with the
//! driver's statistics and record what they see in a local buffer; the driver merges the
//! buffers after each iteration and sends the merged statistics with the next batch of work.

/// Running mean and variance of vectors (Welford's algorithm; Chan et al. to merge).
#[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct RunningStat {
    count: u64,
    mean: Vec<f64>,
    m2: Vec<f64>,
}

impl RunningStat {
    /// Empty statistics of `dim`-sized vectors.
    pub fn new(dim: usize) -> Self {
        RunningStat {
            count: 0,
            mean: vec![0.0; dim],
            m2: vec![0.0; dim],
        }
    }

    /// Number of vectors seen.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Adds one vector.
    pub fn push(&mut self, x: &[f64]) {
        self.count += 1;
        let n = self.count as f64;
        for ((mean, m2), &v) in self.mean.iter_mut().zip(&mut self.m2).zip(x) {
            let delta = v - *mean;
            *mean += delta / n;
            *m2 += delta * (v - *mean);
        }
    }

    /// Adds everything `other` saw.
    pub fn merge(&mut self, other: &RunningStat) {
        if other.count == 0 {
            return;
        }
        let (n1, n2) = (self.count as f64, other.count as f64);
        let n = n1 + n2;
        for i in 0..self.mean.len() {
            let delta = other.mean[i] - self.mean[i];
            self.mean[i] += delta * n2 / n;
            self.m2[i] += other.m2[i] + delta * delta * n1 * n2 / n;
        }
        self.count += other.count;
    }

    /// The mean.
    pub fn mean(&self) -> &[f64] {
        &self.mean
    }

    /// The sample standard deviation of each entry (1 until two vectors were seen).
    pub fn std(&self) -> Vec<f64> {
        self.m2
            .iter()
            .map(|m2| {
                if self.count > 1 {
                    (m2 / (self.count - 1) as f64).sqrt()
                } else {
                    1.0
                }
            })
            .collect()
    }
}

/// Standardises observations with fixed statistics, clipped to +-10 (as RLlib).
#[derive(Debug, Clone)]
pub struct Standardize {
    mean: Vec<f64>,
    inv_std: Vec<f64>,
}

impl Standardize {
    /// The standardisation of `stat`.
    pub fn new(stat: &RunningStat) -> Self {
        Standardize {
            mean: stat.mean.clone(),
            inv_std: stat.std().iter().map(|s| 1.0 / (s + 1e-8)).collect(),
        }
    }

    /// `obs` standardised into `out` (as f32, the networks' type).
    pub fn apply(&self, obs: &[f64], out: &mut Vec<f32>) {
        out.clear();
        out.extend(
            obs.iter()
                .zip(&self.mean)
                .zip(&self.inv_std)
                .map(|((x, m), s)| ((x - m) * s).clamp(-10.0, 10.0) as f32),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_statistics_equal_one_pass() {
        let data: Vec<[f64; 2]> = (0..50)
            .map(|i| [(i as f64 * 0.7).sin() * 3.0 + 1.0, i as f64 * 0.1])
            .collect();
        let mut whole = RunningStat::new(2);
        data.iter().for_each(|x| whole.push(x));
        let (mut a, mut b) = (RunningStat::new(2), RunningStat::new(2));
        data[..17].iter().for_each(|x| a.push(x));
        data[17..].iter().for_each(|x| b.push(x));
        a.merge(&b);
        assert_eq!(a.count(), whole.count());
        for i in 0..2 {
            assert!((a.mean()[i] - whole.mean()[i]).abs() < 1e-12);
            assert!((a.std()[i] - whole.std()[i]).abs() < 1e-12);
        }
        let mean = data.iter().map(|x| x[0]).sum::<f64>() / 50.0;
        let var = data.iter().map(|x| (x[0] - mean).powi(2)).sum::<f64>() / 49.0;
        assert!((whole.std()[0] - var.sqrt()).abs() < 1e-12);
    }
}

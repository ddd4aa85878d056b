//! Every supported form of `#[actor]`: plain and fallible constructors, `&self` and
//! `&mut self` methods, references as arguments, options, names, handles passed to tasks.

use prism::{ActorHandle, actor, remote};

#[actor]
pub struct Account {
    balance: i64,
}

#[actor]
impl Account {
    pub fn new(opening: i64) -> Self {
        Account { balance: opening }
    }

    /// Adds to the balance.
    pub fn deposit(&mut self, amount: i64) -> i64 {
        self.balance += amount;
        self.balance
    }

    pub fn balance(&self) -> i64 {
        self.balance
    }

    fn reset(&mut self) {
        self.balance = 0;
    }

    /// Not remote: no receiver.
    pub fn describe() -> &'static str {
        "an account"
    }
}

#[actor]
struct Checked {
    limit: u32,
}

#[actor]
impl Checked {
    fn new(limit: u32) -> Result<Checked, String> {
        if limit == 0 {
            Err("zero".into())
        } else {
            Ok(Checked { limit })
        }
    }

    fn limit(&self) -> u32 {
        self.limit
    }
}

#[remote]
fn pay(account: ActorHandle<Account>, amount: i64) -> i64 {
    account.deposit(amount).get_blocking().expect("deposit")
}

#[prism::main]
async fn main() -> prism::Result<()> {
    let a = Account::remote(10);
    assert_eq!(a.deposit(5).await?, 15);
    let amount = prism::put(5i64)?;
    assert_eq!(a.deposit(&amount).await?, 20);
    assert_eq!(pay::remote(a.clone(), 1).await?, 21);
    a.reset().await?;
    assert_eq!(a.balance().await?, 0);
    assert_eq!(Account::describe(), "an account");
    let named = Account::options()
        .name("main")
        .num_cpus(0.0)
        .max_restarts(1)
        .max_task_retries(1)
        .remote(1);
    let found = prism::get_actor::<Account>("main")?;
    assert_eq!(found.balance().await?, 1);
    prism::kill(&named)?;
    assert_eq!(Checked::remote(3).limit().await?, 3);
    let threaded = Account::options().max_concurrency(4).remote(7);
    assert_eq!(threaded.balance().await?, 7);
    Ok(())
}

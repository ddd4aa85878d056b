//! The registry of remote functions: `#[remote]` submits one [`RemoteFunction`] per function
//! through `inventory`, keyed by `module_path!()::name` and a hash of its signature; a worker
//! looks calls up here and runs them, turning panics and bad values into [`TaskError`]s.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;

use prism_graph::{TaskError, TaskId};
use prism_transport::{Execute, Outcome};
use rkyv::util::AlignedVec;

use crate::value::Remotable;

/// A remote function as registered by `#[remote]`.
#[derive(Debug)]
pub struct RemoteFunction {
    /// `module_path!()::name`.
    pub name: &'static str,
    /// A hash of the signature.
    pub hash: u64,
    /// Decodes the arguments, calls the function, encodes the return values.
    pub invoke: fn(&Invocation<'_>) -> Result<Vec<AlignedVec>, TaskError>,
}

inventory::collect!(RemoteFunction);

/// One call as the generated `invoke` sees it.
#[derive(Debug)]
pub struct Invocation<'a> {
    task: TaskId,
    function: &'a str,
    args: &'a [Vec<u8>],
}

impl Invocation<'_> {
    /// Checks the number of arguments.
    pub fn expect_args(&self, n: usize) -> Result<(), TaskError> {
        if self.args.len() == n {
            Ok(())
        } else {
            Err(TaskError::InvalidValue {
                task: self.task,
                function: self.function.to_string(),
                what: "the argument list".into(),
                reason: format!("{} arguments sent, the function takes {n}", self.args.len()),
            })
        }
    }

    /// Decodes argument `index`; `desc` (`b: Vec<f64>`) names it in errors.
    pub fn arg<T: Remotable>(&self, index: usize, desc: &str) -> Result<T, TaskError> {
        T::from_bytes(&self.args[index]).map_err(|e| TaskError::InvalidValue {
            task: self.task,
            function: self.function.to_string(),
            what: format!("argument {index} ({desc})"),
            reason: e.to_string(),
        })
    }

    /// Encodes return value `index`.
    pub fn ret<T: Remotable>(&self, value: &T, index: usize) -> Result<AlignedVec, TaskError> {
        value.to_bytes().map_err(|e| TaskError::InvalidValue {
            task: self.task,
            function: self.function.to_string(),
            what: format!("return value {index} ({})", std::any::type_name::<T>()),
            reason: e.to_string(),
        })
    }
}

/// Every registered function by name.
pub(crate) fn functions() -> HashMap<&'static str, &'static RemoteFunction> {
    inventory::iter::<RemoteFunction>
        .into_iter()
        .map(|f| (f.name, f))
        .collect()
}

/// Runs one task: looks the function up, checks its signature, calls it, catches a panic.
pub(crate) fn execute(
    functions: &HashMap<&'static str, &'static RemoteFunction>,
    exec: Execute,
) -> Outcome {
    let task = exec.task;
    let Some(function) = functions.get(exec.function.as_str()) else {
        return Outcome::Failed(TaskError::UnknownFunction {
            task,
            function: exec.function,
            detail: format!(
                "{} remote functions are registered in {}",
                functions.len(),
                std::env::current_exe()
                    .map_or_else(|_| "this binary".into(), |p| p.display().to_string())
            ),
        });
    };
    if function.hash != exec.fn_hash {
        return Outcome::Failed(TaskError::UnknownFunction {
            task,
            function: exec.function,
            detail: format!(
                "its signature differs: the caller expects hash {:016x}, the worker has {:016x}",
                exec.fn_hash, function.hash
            ),
        });
    }
    let call = Invocation {
        task,
        function: function.name,
        args: &exec.args,
    };
    let _span = tracing::debug_span!("task", task = %task, function = function.name).entered();
    match std::panic::catch_unwind(AssertUnwindSafe(|| (function.invoke)(&call))) {
        Ok(Ok(values)) => {
            if values.len() != exec.num_returns as usize {
                return Outcome::Failed(TaskError::InvalidValue {
                    task,
                    function: exec.function,
                    what: "return values".into(),
                    reason: format!(
                        "the function returns {} values, the caller expects {}",
                        values.len(),
                        exec.num_returns
                    ),
                });
            }
            Outcome::Returned(values.into_iter().map(|v| v.to_vec()).collect())
        }
        Ok(Err(error)) => Outcome::Failed(error),
        Err(payload) => {
            let message = if let Some(s) = payload.downcast_ref::<&str>() {
                (*s).to_string()
            } else if let Some(s) = payload.downcast_ref::<String>() {
                s.clone()
            } else {
                "a panic with a non-string payload".to_string()
            };
            Outcome::Failed(TaskError::Panicked {
                task,
                function: exec.function,
                message,
            })
        }
    }
}

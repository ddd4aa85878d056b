//! The options of `#[remote(...)]`, parsed with every error collected.

use proc_macro2::{Span, TokenStream};
use syn::meta::ParseNestedMeta;
use syn::parse::Parser;
use syn::{Lit, LitStr};

pub(crate) const NUM_CPUS: &str = "num_cpus";
pub(crate) const NUM_GPUS: &str = "num_gpus";
pub(crate) const RESOURCES: &str = "resources";
pub(crate) const MAX_RETRIES: &str = "max_retries";
pub(crate) const RETRY_EXCEPTIONS: &str = "retry_exceptions";
pub(crate) const NUM_RETURNS: &str = "num_returns";
pub(crate) const BACKPRESSURE: &str = "backpressure";
const KNOWN: [&str; 7] = [
    NUM_CPUS,
    NUM_GPUS,
    RESOURCES,
    MAX_RETRIES,
    RETRY_EXCEPTIONS,
    NUM_RETURNS,
    BACKPRESSURE,
];

/// The options as written.
#[derive(Default)]
pub(crate) struct RemoteOptions {
    pub(crate) num_cpus: Option<f64>,
    pub(crate) num_gpus: Option<f64>,
    pub(crate) resources: Vec<(LitStr, f64)>,
    pub(crate) max_retries: Option<u32>,
    pub(crate) retry_exceptions: Option<bool>,
    pub(crate) num_returns: Option<(u32, Span)>,
    /// A streaming generator's backpressure (items made and not taken before it pauses).
    pub(crate) backpressure: Option<(u32, Span)>,
}

/// Collects errors so that the user sees all of them in one build.
#[derive(Default)]
pub(crate) struct Errors(Option<syn::Error>);

impl Errors {
    pub(crate) fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(e) => e.combine(error),
            None => self.0 = Some(error),
        }
    }

    pub(crate) fn finish(self) -> Result<(), syn::Error> {
        self.0.map_or(Ok(()), Err)
    }
}

fn number(meta: &ParseNestedMeta<'_>, name: &str) -> syn::Result<f64> {
    let lit: Lit = meta.value()?.parse()?;
    let value = match &lit {
        Lit::Int(i) => i.base10_parse::<f64>()?,
        Lit::Float(f) => f.base10_parse::<f64>()?,
        _ => {
            return Err(syn::Error::new_spanned(
                &lit,
                format!("`{name}` expects a number, like `{name} = 1` or `{name} = 0.5`"),
            ));
        }
    };
    if !value.is_finite() || value < 0.0 {
        return Err(syn::Error::new_spanned(
            &lit,
            format!("`{name}` must be a non-negative number"),
        ));
    }
    Ok(value)
}

fn integer(meta: &ParseNestedMeta<'_>, name: &str) -> syn::Result<u32> {
    let lit: Lit = meta.value()?.parse()?;
    match &lit {
        Lit::Int(i) => i.base10_parse::<u32>(),
        _ => Err(syn::Error::new_spanned(
            &lit,
            format!("`{name}` expects a whole number, like `{name} = 3`"),
        )),
    }
}

fn boolean(meta: &ParseNestedMeta<'_>, name: &str) -> syn::Result<bool> {
    let lit: Lit = meta.value()?.parse()?;
    match &lit {
        Lit::Bool(b) => Ok(b.value),
        _ => Err(syn::Error::new_spanned(
            &lit,
            format!("`{name}` expects `true` or `false`"),
        )),
    }
}

/// Parses `#[remote(...)]`'s tokens.
pub(crate) fn parse(tokens: TokenStream, errors: &mut Errors) -> RemoteOptions {
    let mut options = RemoteOptions::default();
    let mut seen: Vec<String> = Vec::new();
    let parser = syn::meta::parser(|meta| {
        let Some(ident) = meta.path.get_ident().map(ToString::to_string) else {
            return Err(meta.error("expected an option name"));
        };
        if !KNOWN.contains(&ident.as_str()) {
            // Skip the value so the other options are still checked.
            if meta.input.peek(syn::Token![=]) {
                let _: syn::Expr = meta.value()?.parse()?;
            }
            errors.push(meta.error(format!(
                "unknown option `{ident}`; expected one of: {}",
                KNOWN.join(", ")
            )));
            return Ok(());
        }
        if seen.contains(&ident) {
            errors.push(meta.error(format!("duplicate option `{ident}`")));
        }
        seen.push(ident.clone());
        let result = match ident.as_str() {
            NUM_CPUS => number(&meta, NUM_CPUS).map(|v| options.num_cpus = Some(v)),
            NUM_GPUS => number(&meta, NUM_GPUS).map(|v| options.num_gpus = Some(v)),
            MAX_RETRIES => integer(&meta, MAX_RETRIES).map(|v| options.max_retries = Some(v)),
            BACKPRESSURE => {
                let span = meta
                    .path
                    .get_ident()
                    .map_or_else(Span::call_site, |i| i.span());
                integer(&meta, BACKPRESSURE).map(|v| options.backpressure = Some((v, span)))
            }
            RETRY_EXCEPTIONS => {
                boolean(&meta, RETRY_EXCEPTIONS).map(|v| options.retry_exceptions = Some(v))
            }
            NUM_RETURNS => {
                let span = meta
                    .path
                    .get_ident()
                    .map_or_else(Span::call_site, |i| i.span());
                integer(&meta, NUM_RETURNS).and_then(|v| {
                    if v == 0 {
                        Err(meta.error("`num_returns` must be at least 1"))
                    } else {
                        options.num_returns = Some((v, span));
                        Ok(())
                    }
                })
            }
            RESOURCES => meta.parse_nested_meta(|inner| {
                let Some(name) = inner.path.get_ident() else {
                    return Err(inner.error("expected a resource name"));
                };
                let label = name.to_string();
                if label == "CPU" || label == "GPU" {
                    return Err(inner.error(format!(
                        "set {label} with `num_{}` rather than in `resources`",
                        label.to_lowercase()
                    )));
                }
                let amount = number(&inner, &label)?;
                options
                    .resources
                    .push((LitStr::new(&label, name.span()), amount));
                Ok(())
            }),
            _ => unreachable!("checked against KNOWN"),
        };
        if let Err(e) = result {
            errors.push(e);
        }
        Ok(())
    });
    if let Err(e) = parser.parse2(tokens) {
        errors.push(e);
    }
    options
}

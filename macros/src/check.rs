//! Validation of a `#[remote]` function and of `#[prism::main]`: every problem becomes a
//! spanned error on the tokens at fault, all collected into one.

use syn::spanned::Spanned;
use syn::{FnArg, ItemFn, Pat, ReturnType, Safety, Type};

use crate::attr::{Errors, RemoteOptions};
use crate::model::{Param, RemoteFn};

fn check_type(ty: &Type, errors: &mut Errors) {
    match ty {
        Type::Reference(r) => errors.push(syn::Error::new_spanned(
            r,
            "remote function arguments are moved to another process: take the value, or `&Archived<T>` for a zero-copy view",
        )),
        Type::ImplTrait(t) => errors.push(syn::Error::new_spanned(
            t,
            "`impl Trait` makes the function generic; remote functions need concrete types",
        )),
        Type::Infer(t) => errors.push(syn::Error::new_spanned(t, "the type must be written out")),
        _ => {}
    }
}

/// `T` when `ty` is `&Archived<T>` (a zero-copy view parameter).
fn archived_view(ty: &Type) -> Option<Type> {
    let Type::Reference(r) = ty else { return None };
    if r.mutability.is_some() {
        return None;
    }
    let Type::Path(p) = &*r.elem else { return None };
    let last = p.path.segments.last()?;
    if last.ident != "Archived" {
        return None;
    }
    match &last.arguments {
        syn::PathArguments::AngleBracketed(args) if args.args.len() == 1 => match &args.args[0] {
            syn::GenericArgument::Type(inner) => Some(inner.clone()),
            _ => None,
        },
        _ => None,
    }
}

/// Checks one `name: Type` (or `name: &Archived<Type>`) argument.
pub(crate) fn param(pt: &syn::PatType, errors: &mut Errors) -> Option<Param> {
    let (ty, archived) = match archived_view(&pt.ty) {
        Some(inner) => (inner, true),
        None => {
            check_type(&pt.ty, errors);
            ((*pt.ty).clone(), false)
        }
    };
    match &*pt.pat {
        Pat::Ident(pi) if pi.by_ref.is_none() && pi.subpat.is_none() => Some(Param {
            ident: pi.ident.clone(),
            ty,
            archived,
        }),
        other => {
            errors.push(syn::Error::new_spanned(
                other,
                "remote function arguments must be plain names (`name: Type`), not patterns",
            ));
            None
        }
    }
}

/// The return type, or an error for `impl Trait`.
pub(crate) fn return_type(output: &ReturnType, errors: &mut Errors) -> Type {
    match output {
        ReturnType::Default => syn::parse_quote!(()),
        ReturnType::Type(_, ty) => {
            if let Type::ImplTrait(t) = &**ty {
                errors.push(syn::Error::new_spanned(
                    t,
                    "a remote function must name its return type; `impl Trait` cannot cross processes",
                ));
            }
            (**ty).clone()
        }
    }
}

/// Checks the function's shape and builds the model.
pub(crate) fn remote(
    item: ItemFn,
    options: RemoteOptions,
    errors: &mut Errors,
) -> Option<RemoteFn> {
    let sig = &item.sig;
    const GENERIC: &str = "remote functions cannot be generic: a worker finds each function by name, so its types must be concrete";
    if !sig.generics.params.is_empty() {
        errors.push(syn::Error::new_spanned(&sig.generics, GENERIC));
    } else if let Some(clause) = &sig.generics.where_clause {
        errors.push(syn::Error::new_spanned(clause, GENERIC));
    }
    if let Some(c) = &sig.constness {
        errors.push(syn::Error::new_spanned(
            c,
            "a remote function cannot be `const`",
        ));
    }
    if let Safety::Unsafe(u) = &sig.safety {
        errors.push(syn::Error::new_spanned(
            u,
            "a remote function cannot be `unsafe`: callers on other machines cannot uphold its contract",
        ));
    }
    if let Some(abi) = &sig.abi {
        errors.push(syn::Error::new_spanned(
            abi,
            "a remote function cannot have an `extern` ABI",
        ));
    }
    if let Some(v) = &sig.variadic {
        errors.push(syn::Error::new_spanned(
            v,
            "a remote function cannot be variadic",
        ));
    }
    let mut params = Vec::new();
    for input in &sig.inputs {
        match input {
            FnArg::Receiver(r) => errors.push(syn::Error::new_spanned(
                r,
                "a remote function cannot take `self`; put stateful methods on an `#[actor]`",
            )),
            FnArg::Typed(pt) => params.extend(param(pt, errors)),
        }
    }
    let ret = return_type(&sig.output, errors);
    let streamed = single_argument(&ret, "Stream");
    if let (Some(_), Some((_, span))) = (&streamed, options.num_returns) {
        errors.push(syn::Error::new(
            span,
            "a streaming generator (returning `Stream<T>`) makes any number of items: `num_returns` does not apply",
        ));
    }
    if let (None, Some((_, span))) = (&streamed, options.backpressure) {
        errors.push(syn::Error::new(
            span,
            "`backpressure` applies to streaming generators, functions returning `prism::Stream<T>`",
        ));
    }
    if let Some(item_ty) = streamed {
        let is_async = sig.asyncness.is_some();
        return Some(RemoteFn {
            item,
            params,
            returns: vec![item_ty],
            split: false,
            listed: None,
            streamed: true,
            is_async,
            options,
        });
    }
    let (returns, split, listed) = match options.num_returns {
        None | Some((1, _)) => (vec![ret], false, None),
        Some((n, span)) => match &ret {
            Type::Tuple(t) if t.elems.len() == n as usize => {
                (t.elems.iter().cloned().collect(), true, None)
            }
            _ => match single_argument(&ret, "Vec") {
                Some(elem) => (vec![elem], false, Some(n)),
                None => {
                    let mut e = syn::Error::new(
                        span,
                        format!(
                            "`num_returns = {n}` needs a tuple return type with {n} elements, or a `Vec<T>` of {n} values"
                        ),
                    );
                    e.combine(syn::Error::new(
                        ret.span(),
                        format!("this is neither a tuple of {n} nor a `Vec`"),
                    ));
                    errors.push(e);
                    (vec![ret], false, None)
                }
            },
        },
    };
    let is_async = sig.asyncness.is_some();
    Some(RemoteFn {
        item,
        params,
        returns,
        split,
        listed,
        streamed: false,
        is_async,
        options,
    })
}

/// `T` of a type spelled `Name<T>` (or a path ending in `Name<T>`): `Vec<T>`, `Stream<T>`.
pub(crate) fn single_argument(ty: &Type, name: &str) -> Option<Type> {
    let Type::Path(path) = ty else {
        return None;
    };
    let last = path.path.segments.last()?;
    if last.ident != name {
        return None;
    }
    let syn::PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    match args.args.iter().collect::<Vec<_>>().as_slice() {
        [syn::GenericArgument::Type(elem)] => Some(elem.clone()),
        _ => None,
    }
}

/// Checks the function under `#[prism::main]`.
pub(crate) fn main(item: &ItemFn, errors: &mut Errors) {
    let sig = &item.sig;
    if !sig.inputs.is_empty() {
        errors.push(syn::Error::new_spanned(
            &sig.inputs,
            "`#[prism::main]` goes on a function without arguments",
        ));
    }
    if !sig.generics.params.is_empty() {
        errors.push(syn::Error::new_spanned(
            &sig.generics,
            "`#[prism::main]` cannot be generic",
        ));
    }
    if let Some(c) = &sig.constness {
        errors.push(syn::Error::new_spanned(
            c,
            "`#[prism::main]` cannot be `const`",
        ));
    }
}

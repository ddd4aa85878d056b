//! Code generation. Generated items name only `::prism::__private::*` and absolute `::core` /
//! `::std` paths; on error the original item is still emitted beside the errors, so the IDE
//! keeps working.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{ItemFn, ReturnType};

use crate::attr::{self, Errors};
use crate::check;
use crate::model::RemoteFn;

/// FNV-1a, stable across builds of the same source: the signature's fingerprint.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn with_errors(item: TokenStream, error: syn::Error) -> TokenStream {
    let errors = error.into_compile_error();
    quote!(#item #errors)
}

pub(crate) fn remote(attr: TokenStream, item: TokenStream) -> TokenStream {
    let func: ItemFn = match syn::parse2(item.clone()) {
        Ok(f) => f,
        Err(e) => {
            let error = syn::Error::new(e.span(), "`#[remote]` goes on a function (`fn`)");
            return with_errors(item, error);
        }
    };
    let mut errors = Errors::default();
    let options = attr::parse(attr, &mut errors);
    let model = check::remote(func, options, &mut errors);
    match (errors.finish(), model) {
        (Ok(()), Some(model)) => generate(&model),
        (Err(e), _) => with_errors(item, e),
        (Ok(()), None) => item,
    }
}

fn generate(f: &RemoteFn) -> TokenStream {
    let item = &f.item;
    let vis = &item.vis;
    let name = &item.sig.ident;
    let idents: Vec<_> = f.params.iter().map(|p| &p.ident).collect();
    let tys: Vec<_> = f.params.iter().map(|p| &p.ty).collect();
    let nargs = f.params.len();
    let decode = crate::model::decode_params(&f.params);
    let returns = &f.returns;
    let num_returns = f.listed.unwrap_or(returns.len() as u32);

    let signature = {
        let inputs = &item.sig.inputs;
        let output = match &item.sig.output {
            ReturnType::Default => quote!(()),
            ReturnType::Type(_, t) => quote!(#t),
        };
        format!(
            "{} ({}) -> {} / {}",
            name,
            quote!(#inputs),
            output,
            num_returns
        )
    };
    let hash = fnv1a(&signature);

    let opts = &f.options;
    let set = |field: &str, value: Option<TokenStream>| {
        let field = format_ident!("{field}");
        value.map(|v| quote!(__opts.#field = #v;))
    };
    let set_cpus = set(attr::NUM_CPUS, opts.num_cpus.map(|v| quote!(#v)));
    let set_gpus = set(attr::NUM_GPUS, opts.num_gpus.map(|v| quote!(#v)));
    let set_retries = set(attr::MAX_RETRIES, opts.max_retries.map(|v| quote!(#v)));
    let set_retry_exc = set(
        attr::RETRY_EXCEPTIONS,
        opts.retry_exceptions.map(|v| quote!(#v)),
    );
    let set_backpressure = set("backpressure", opts.backpressure.map(|(v, _)| quote!(#v)));
    let set_resources = opts
        .resources
        .iter()
        .map(|(n, v)| quote!(__opts.set_resource(#n, #v);));

    let stub_ret = if f.streamed {
        let r = &returns[0];
        quote!(::prism::__private::ObjectRefStream<#r>)
    } else if f.listed.is_some() {
        let r = &returns[0];
        quote!(::std::vec::Vec<::prism::__private::ObjectRef<#r>>)
    } else if f.split {
        quote!((#(::prism::__private::ObjectRef<#returns>),*))
    } else {
        let r = &returns[0];
        quote!(::prism::__private::ObjectRef<#r>)
    };
    let take = returns.iter().map(|_| {
        quote!(::prism::__private::ObjectRef::from_raw(
            __refs.next().expect("one reference per return value")
        ))
    });
    let build_ret = if f.listed.is_some() {
        quote!(
            __refs
                .map(::prism::__private::ObjectRef::from_raw)
                .collect()
        )
    } else if f.split {
        quote!((#(#take),*))
    } else {
        quote!(#(#take)*)
    };

    let submit = if f.streamed {
        quote!(
            ::prism::__private::submit_stream(
                __NAME,
                __HASH,
                ::std::vec![#(::prism::__private::IntoArg::<#tys>::into_arg(#idents)),*],
                &self.opts,
            )
            .typed()
        )
    } else {
        quote! {
            let __refs = ::prism::__private::submit(
                __NAME,
                __HASH,
                ::std::vec![#(::prism::__private::IntoArg::<#tys>::into_arg(#idents)),*],
                &self.opts,
                #num_returns,
            );
            let mut __refs = __refs.into_iter();
            #build_ret
        }
    };
    let call = if f.is_async {
        quote!(::prism::__private::block_on(super::#name(#(#idents),*)))
    } else {
        quote!(super::#name(#(#idents),*))
    };
    // Each return value is encoded by a call spanned on its type, so a type that cannot cross
    // processes is reported there (argument types likewise where they are decoded).
    let encode_each = returns.iter().enumerate().map(|(i, ty)| {
        let value = if f.split {
            let idx = syn::Index::from(i);
            quote!(&__ret.#idx)
        } else {
            quote!(&__ret)
        };
        quote_spanned!(ty.span()=> __call.ret::<#ty>(#value, #i)?)
    });
    let encode = match f.listed {
        // One object per item, made as the items come; the return value is their count.
        _ if f.streamed => {
            let ty = &returns[0];
            quote_spanned!(ty.span()=> ::std::vec![__call.stream::<#ty>(__ret)?])
        }
        // One object per element; the worker checks that there are `num_returns` of them.
        Some(_) => {
            let ty = &returns[0];
            quote_spanned!(ty.span()=> __ret
                .iter()
                .enumerate()
                .map(|(__i, __v)| __call.ret::<#ty>(__v, __i))
                .collect::<::core::result::Result<::std::vec::Vec<_>, _>>()?)
        }
        None => quote!(::std::vec![#(#encode_each),*]),
    };
    let doc = format!(
        "Remote stubs of [`{name}`](fn@{name}): `{name}::remote(..)` runs it as a task and \
         returns at once; `{name}::options()` sets per-call options."
    );

    quote! {
        #item

        #[doc = #doc]
        #[allow(unused_imports, clippy::too_many_arguments, clippy::unused_unit)]
        #vis mod #name {
            use super::*;

            #[doc(hidden)]
            pub const __NAME: &str = ::core::module_path!();
            #[doc(hidden)]
            pub const __HASH: u64 = #hash;

            /// A call being built: set options, then `.remote(..)`.
            #[derive(Debug, Clone)]
            #[must_use = "a call does nothing until `.remote(..)`"]
            pub struct Call {
                opts: ::prism::__private::TaskOptions,
            }

            ::prism::__private::options_builder!(Call);

            /// Starts a call with per-call options; the attribute's options are the defaults.
            pub fn options() -> Call {
                let mut __opts = <::prism::__private::TaskOptions as ::core::default::Default>::default();
                #set_cpus
                #set_gpus
                #set_retries
                #set_retry_exc
                #set_backpressure
                #(#set_resources)*
                Call { opts: __opts }
            }

            /// Submits a call with the default options; returns at once.
            pub fn remote(#(#idents: impl ::prism::__private::IntoArg<#tys>),*) -> #stub_ret {
                options().remote(#(#idents),*)
            }

            impl Call {
                /// Submits the call; returns at once.
                pub fn remote(self, #(#idents: impl ::prism::__private::IntoArg<#tys>),*) -> #stub_ret {
                    #submit
                }
            }

            fn __invoke(
                __call: &::prism::__private::Invocation<'_>,
            ) -> ::core::result::Result<::std::vec::Vec<::prism::__private::AlignedVec>, ::prism::__private::TaskError> {
                __call.expect_args(#nargs)?;
                #(#decode)*
                let __ret = #call;
                ::core::result::Result::Ok(#encode)
            }

            ::prism::__private::inventory::submit! {
                ::prism::__private::RemoteFunction { name: __NAME, hash: __HASH, invoke: __invoke }
            }
        }
    }
}

pub(crate) fn main(attr: TokenStream, item: TokenStream) -> TokenStream {
    let func: ItemFn = match syn::parse2(item.clone()) {
        Ok(f) => f,
        Err(e) => return with_errors(item, e),
    };
    let mut errors = Errors::default();
    if !attr.is_empty() {
        errors.push(syn::Error::new_spanned(
            &attr,
            "`#[prism::main]` takes no options; configure the cluster with prism::Config and prism::init_with",
        ));
    }
    check::main(&func, &mut errors);
    if let Err(e) = errors.finish() {
        return with_errors(item, e);
    }
    let ItemFn {
        attrs,
        vis,
        sig,
        block,
        ..
    } = &func;
    let mut inner_sig = sig.clone();
    inner_sig.ident = format_ident!("__prism_main_body");
    let mut outer_sig = sig.clone();
    outer_sig.asyncness = None;
    let run = if sig.asyncness.is_some() {
        quote!(::prism::__private::run_main(__prism_main_body()))
    } else {
        quote!(::prism::__private::run_main_sync(__prism_main_body))
    };
    quote! {
        #(#attrs)*
        #vis #outer_sig {
            #inner_sig #block
            #run
        }
    }
}

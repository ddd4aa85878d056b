//! `#[actor]`: on a struct it makes the type an actor class and declares its method stubs
//! (`NameRemote`, reached through `ActorHandle<Name>`); on the struct's `impl` block it finds
//! the constructor `fn new(..) -> Self` (or `Result<Self, E>`), generates `Name::remote(..)`
//! and `Name::options()`, a stub per `&self` / `&mut self` method, and registers the
//! constructor and the methods for the workers.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{FnArg, ImplItem, ImplItemFn, Item, ItemImpl, ItemStruct, Type};

use crate::attr::Errors;
use crate::check;
use crate::model::Param;

pub(crate) fn expand(attr: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    if !attr.is_empty() {
        errors.push(syn::Error::new_spanned(
            &attr,
            "`#[actor]` takes no options here; set them per actor with `Type::options()`",
        ));
    }
    let mut marker = None;
    let expanded = match syn::parse2::<Item>(item.clone()) {
        Ok(Item::Struct(s)) => on_struct(&s, &mut errors),
        Ok(Item::Impl(i)) => {
            marker = impl_marker(&i);
            on_impl(&i, &mut errors)
        }
        Ok(other) => {
            errors.push(syn::Error::new_spanned(
                &other,
                "`#[actor]` goes on a struct and on its `impl` block",
            ));
            None
        }
        Err(e) => {
            errors.push(e);
            None
        }
    };
    match (errors.finish(), expanded) {
        (Ok(()), Some(tokens)) => tokens,
        (Err(e), _) => {
            // The impl block exists even if it is wrong: say only what is wrong with it.
            let e = e.into_compile_error();
            quote!(#item #marker #e)
        }
        (Ok(()), None) => item,
    }
}

/// `impl ActorImpl for Name {}` for an inherent impl of a plain type name.
fn impl_marker(imp: &ItemImpl) -> Option<TokenStream> {
    match (&imp.trait_, &*imp.self_ty) {
        (None, Type::Path(p)) if p.qself.is_none() && p.path.segments.len() == 1 => {
            let name = &p.path.segments[0].ident;
            Some(quote!(impl ::prism::__private::ActorImpl for #name {}))
        }
        _ => None,
    }
}

fn stub_ident(name: &syn::Ident) -> syn::Ident {
    format_ident!("{}Remote", name)
}

fn on_struct(s: &ItemStruct, errors: &mut Errors) -> Option<TokenStream> {
    if !s.generics.params.is_empty() || s.generics.where_clause.is_some() {
        errors.push(syn::Error::new_spanned(
            &s.generics,
            "actors cannot be generic: a worker finds each actor class by name",
        ));
        return None;
    }
    let name = &s.ident;
    let vis = &s.vis;
    let stub = stub_ident(name);
    let doc = format!(
        "The methods of an [`ActorHandle<{name}>`](::prism::ActorHandle): each submits a call \
         to the actor and returns an `ObjectRef` at once."
    );
    Some(quote! {
        #s

        #[doc = #doc]
        #vis struct #stub {
            __raw: ::prism::__private::RawActor,
        }

        #[automatically_derived]
        impl ::core::fmt::Debug for #stub {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                ::core::fmt::Debug::fmt(&self.__raw, f)
            }
        }

        #[automatically_derived]
        impl ::prism::__private::ActorStub for #stub {
            fn from_raw(raw: ::prism::__private::RawActor) -> Self {
                #stub { __raw: raw }
            }
            fn raw(&self) -> &::prism::__private::RawActor {
                &self.__raw
            }
        }

        #[automatically_derived]
        impl ::prism::__private::Actor for #name {
            type Stub = #stub;
            const CLASS: &'static str = ::core::concat!(::core::module_path!(), "::", ::core::stringify!(#name));
        }

        const _: () = {
            #[allow(dead_code)]
            fn __prism_actor_needs_its_impl()
            where
                #name: ::prism::__private::ActorImpl,
            {
            }
        };
    })
}

/// One remote method of the actor.
struct Method<'a> {
    func: &'a ImplItemFn,
    params: Vec<Param>,
    ret: Type,
}

fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn sig_hash(f: &ImplItemFn) -> u64 {
    let inputs = &f.sig.inputs;
    let output = &f.sig.output;
    fnv1a(&format!(
        "{} ({}) {}",
        f.sig.ident,
        quote!(#inputs),
        quote!(#output)
    ))
}

/// Whether `ty` is `Self`, the type itself, or `Result<Self, _>` (then true in the second).
fn constructor_return(ty: &Type, name: &syn::Ident) -> Option<bool> {
    let is_self = |t: &Type| match t {
        Type::Path(p) => p.qself.is_none() && (p.path.is_ident("Self") || p.path.is_ident(name)),
        _ => false,
    };
    if is_self(ty) {
        return Some(false);
    }
    if let Type::Path(p) = ty
        && let Some(last) = p.path.segments.last()
        && last.ident == "Result"
        && let syn::PathArguments::AngleBracketed(args) = &last.arguments
        && let Some(syn::GenericArgument::Type(first)) = args.args.first()
        && is_self(first)
    {
        return Some(true);
    }
    None
}

fn on_impl(imp: &ItemImpl, errors: &mut Errors) -> Option<TokenStream> {
    if let Some((path, _)) = &imp.trait_ {
        errors.push(syn::Error::new_spanned(
            path,
            "`#[actor]` goes on the type's own `impl` block, not on a trait impl",
        ));
        return None;
    }
    if !imp.generics.params.is_empty() {
        errors.push(syn::Error::new_spanned(
            &imp.generics,
            "actors cannot be generic: a worker finds each actor class by name",
        ));
        return None;
    }
    let name = match &*imp.self_ty {
        Type::Path(p) if p.qself.is_none() && p.path.segments.len() == 1 => {
            p.path.segments[0].ident.clone()
        }
        other => {
            errors.push(syn::Error::new_spanned(
                other,
                "`#[actor]` goes on `impl Name { .. }` for a struct `Name` in this module",
            ));
            return None;
        }
    };

    let mut constructor: Option<(&ImplItemFn, Vec<Param>, bool)> = None;
    let mut methods = Vec::new();
    for item in &imp.items {
        let ImplItem::Fn(f) = item else { continue };
        let receiver = f.sig.inputs.first().and_then(|a| match a {
            FnArg::Receiver(r) => Some(r),
            FnArg::Typed(_) => None,
        });
        let is_new = f.sig.ident == "new" && receiver.is_none();
        if receiver.is_none() && !is_new {
            continue; // an associated function: not remote
        }
        if !f.sig.generics.params.is_empty() {
            errors.push(syn::Error::new_spanned(
                &f.sig.generics,
                "actor methods cannot be generic: a worker finds each method by name",
            ));
            continue;
        }
        if let Some(r) = receiver
            && !matches!(r.kind, syn::ReceiverKind::Reference(..))
        {
            errors.push(syn::Error::new_spanned(
                r,
                "an actor method takes `&self` or `&mut self`: the actor keeps its state between calls",
            ));
            continue;
        }
        let mut params = Vec::new();
        for input in &f.sig.inputs {
            if let FnArg::Typed(pt) = input {
                params.extend(check::param(pt, errors));
            }
        }
        let ret = check::return_type(&f.sig.output, errors);
        if is_new {
            match constructor_return(&ret, &name) {
                Some(fallible) => constructor = Some((f, params, fallible)),
                None => errors.push(syn::Error::new_spanned(
                    &f.sig.output,
                    "an actor's constructor `new` returns `Self` or `Result<Self, E>`",
                )),
            }
        } else {
            methods.push(Method {
                func: f,
                params,
                ret,
            });
        }
    }
    let Some((new_fn, new_params, fallible)) = constructor else {
        if !imp
            .items
            .iter()
            .any(|i| matches!(i, ImplItem::Fn(f) if f.sig.ident == "new"))
        {
            errors.push(syn::Error::new_spanned(
                &imp.self_ty,
                "an `#[actor]` impl needs a constructor: `fn new(..) -> Self`",
            ));
        }
        return None;
    };
    Some(generate(
        imp,
        &name,
        new_fn,
        &new_params,
        fallible,
        &methods,
    ))
}

fn generate(
    imp: &ItemImpl,
    name: &syn::Ident,
    new_fn: &ImplItemFn,
    new_params: &[Param],
    fallible: bool,
    methods: &[Method<'_>],
) -> TokenStream {
    let stub = stub_ident(name);
    let create = format_ident!("__PrismCreate{}", name);
    let new_idents: Vec<_> = new_params.iter().map(|p| &p.ident).collect();
    let new_tys: Vec<_> = new_params.iter().map(|p| &p.ty).collect();
    let new_decode = crate::model::decode_params(new_params);
    let new_count = new_params.len();
    let new_hash = sig_hash(new_fn);
    let construct = if fallible {
        quote!(match #name::new(#(#new_idents),*) {
            ::core::result::Result::Ok(v) => v,
            ::core::result::Result::Err(e) => return ::core::result::Result::Err(__call.constructor_failed(e)),
        })
    } else {
        quote!(#name::new(#(#new_idents),*))
    };

    // Ray's rule: an actor with an async method is an async actor, whose calls (all of them)
    // run on one event loop.
    let is_async = methods.iter().any(|m| m.func.sig.asyncness.is_some());
    let mut stubs = Vec::new();
    let mut registrations = Vec::new();
    for m in methods {
        let method = &m.func.sig.ident;
        let idents: Vec<_> = m.params.iter().map(|p| &p.ident).collect();
        let tys: Vec<_> = m.params.iter().map(|p| &p.ty).collect();
        let decode = crate::model::decode_params(&m.params);
        let count = m.params.len();
        let ret = &m.ret;
        let hash = sig_hash(m.func);
        let key = format_ident!("__METHOD_{}", method);
        let invoke = format_ident!("__prism_invoke_{}", method);
        let invoke_shared = format_ident!("__prism_invoke_shared_{}", method);
        let mutable = matches!(
            m.func.sig.inputs.first(),
            Some(FnArg::Receiver(syn::Receiver {
                kind: syn::ReceiverKind::Reference(_, _, Some(_)),
                ..
            }))
        );
        let lock = if mutable {
            quote!(::prism::__private::write_actor)
        } else {
            quote!(::prism::__private::read_actor)
        };
        let call = if m.func.sig.asyncness.is_some() {
            quote!(::prism::__private::block_on(__this.#method(#(#idents),*)))
        } else {
            quote!(__this.#method(#(#idents),*))
        };
        let streamed = crate::check::single_argument(ret, "Stream");
        let encode = match &streamed {
            Some(item) => quote_spanned!(ret.span()=> __call.stream::<#item>(__ret)?),
            None => quote_spanned!(ret.span()=> __call.ret::<#ret>(&__ret, 0)?),
        };
        let args = quote!(::std::vec![#(::prism::__private::IntoArg::<#tys>::into_arg(#idents)),*]);
        let (stub_ret, submit) = match &streamed {
            Some(item) => (
                quote!(::prism::__private::ObjectRefStream<#item>),
                quote!(::prism::__private::call_actor_stream(
                    ::prism::__private::ActorStub::raw(self),
                    Self::#key,
                    #hash,
                    #args,
                ).typed()),
            ),
            None => (
                quote!(::prism::__private::ObjectRef<#ret>),
                quote! {
                    let __refs = ::prism::__private::call_actor(
                        ::prism::__private::ActorStub::raw(self),
                        Self::#key,
                        #hash,
                        #args,
                        1,
                    );
                    ::prism::__private::ObjectRef::from_raw(
                        __refs.into_iter().next().expect("one reference per return value"),
                    )
                },
            ),
        };
        let invoke_async = if is_async {
            let name_async = format_ident!("__prism_invoke_async_{}", method);
            let (guard, view) = if mutable {
                (quote!(write), quote!(downcast_mut))
            } else {
                (quote!(read), quote!(downcast_ref))
            };
            let run = if m.func.sig.asyncness.is_some() {
                quote!(__this.#method(#(#idents),*).await)
            } else {
                quote!(__this.#method(#(#idents),*))
            };
            let body = quote! {
                #[allow(unused_mut)]
                fn #name_async(
                    __state: ::prism::__private::AsyncActor,
                    __data: ::prism::__private::CallData,
                ) -> ::prism::__private::AsyncCall {
                    ::std::boxed::Box::pin(async move {
                        let __call = __data.invocation();
                        __call.expect_args(#count)?;
                        #(#decode)*
                        let __ret = {
                            let mut __guard = __state.#guard().await;
                            let __this = __guard.#view::<#name>().ok_or_else(|| __call.wrong_state())?;
                            #run
                        };
                        let __value = #encode;
                        ::core::result::Result::Ok::<_, ::prism::__private::TaskError>(
                            __call.finish(::std::vec![__value]),
                        )
                    })
                }
            };
            (body, quote!(::core::option::Option::Some(#name_async)))
        } else {
            (quote!(), quote!(::core::option::Option::None))
        };
        let (async_fn, async_slot) = invoke_async;
        let docs = m.func.attrs.iter().filter(|a| a.path().is_ident("doc"));
        stubs.push(quote! {
            #[doc(hidden)]
            #[allow(non_upper_case_globals)]
            pub const #key: &'static str =
                ::core::concat!(::core::module_path!(), "::", ::core::stringify!(#name), "::", ::core::stringify!(#method));

            #(#docs)*
            pub fn #method(&self, #(#idents: impl ::prism::__private::IntoArg<#tys>),*) -> #stub_ret {
                #submit
            }
        });
        registrations.push(quote! {
            fn #invoke(
                __state: &mut ::prism::__private::ActorState,
                __call: &::prism::__private::Invocation<'_>,
            ) -> ::core::result::Result<::std::vec::Vec<::prism::__private::AlignedVec>, ::prism::__private::TaskError> {
                __call.expect_args(#count)?;
                #(#decode)*
                let __this = __state.downcast_mut::<#name>().ok_or_else(|| __call.wrong_state())?;
                let __ret = #call;
                ::core::result::Result::Ok(::std::vec![#encode])
            }
            fn #invoke_shared(
                __shared: &::prism::__private::SharedActor,
                __call: &::prism::__private::Invocation<'_>,
            ) -> ::core::result::Result<::std::vec::Vec<::prism::__private::AlignedVec>, ::prism::__private::TaskError> {
                __call.expect_args(#count)?;
                #(#decode)*
                let __ret = #lock::<#name, _>(__shared, __call, |__this| #call)?;
                ::core::result::Result::Ok(::std::vec![#encode])
            }
            #async_fn
            ::prism::__private::inventory::submit! {
                ::prism::__private::ActorMethod {
                    name: #stub::#key,
                    hash: #hash,
                    invoke: #invoke,
                    invoke_shared: #invoke_shared,
                    invoke_async: #async_slot,
                }
            }
        });
    }
    let span = Span::call_site();
    quote_spanned! {span=>
        #imp

        #[automatically_derived]
        impl ::prism::__private::ActorImpl for #name {}

        impl #name {
            /// Starts an actor of this class in a worker process of its own; returns its handle
            /// at once.
            pub fn remote(#(#new_idents: impl ::prism::__private::IntoArg<#new_tys>),*) -> ::prism::__private::ActorHandle<#name> {
                Self::options().remote(#(#new_idents),*)
            }

            /// Starts building an actor with options (resources, restarts, a name).
            pub fn options() -> #create {
                #create { opts: ::prism::__private::actor_defaults(#is_async) }
            }
        }

        #[doc(hidden)]
        #[derive(Debug, Clone)]
        #[must_use = "an actor is not started until `.remote(..)`"]
        pub struct #create {
            opts: ::prism::__private::ActorOptions,
        }

        ::prism::__private::actor_options_builder!(#create);

        impl #create {
            /// Starts the actor; returns its handle at once.
            pub fn remote(self, #(#new_idents: impl ::prism::__private::IntoArg<#new_tys>),*) -> ::prism::__private::ActorHandle<#name> {
                ::prism::__private::create_actor::<#name>(
                    #new_hash,
                    ::std::vec![#(::prism::__private::IntoArg::<#new_tys>::into_arg(#new_idents)),*],
                    &self.opts,
                )
            }

            /// Starts the actor; an error instead of a panic when its name is taken or the
            /// process cannot reach its node.
            pub fn try_remote(self, #(#new_idents: impl ::prism::__private::IntoArg<#new_tys>),*) -> ::prism::__private::Result<::prism::__private::ActorHandle<#name>> {
                ::prism::__private::try_create_actor::<#name>(
                    #new_hash,
                    ::std::vec![#(::prism::__private::IntoArg::<#new_tys>::into_arg(#new_idents)),*],
                    &self.opts,
                )
            }
        }

        impl #stub {
            #(#stubs)*
        }

        const _: () = {
            fn __prism_create(
                __call: &::prism::__private::Invocation<'_>,
            ) -> ::core::result::Result<::prism::__private::ActorState, ::prism::__private::TaskError> {
                __call.expect_args(#new_count)?;
                #(#new_decode)*
                let __value: #name = #construct;
                ::core::result::Result::Ok(::std::boxed::Box::new(__value))
            }
            // Whether the type is Sync, decided at compile time (autoref specialization): a
            // Sync actor may run calls on several threads.
            #[allow(dead_code, clippy::needless_borrow)]
            fn __prism_share(
                __state: ::prism::__private::ActorState,
            ) -> ::core::result::Result<::prism::__private::SharedActor, ::prism::__private::ActorState> {
                struct __Probe<T>(::core::marker::PhantomData<T>);
                trait __Shareable {
                    fn __share(
                        &self,
                        state: ::prism::__private::ActorState,
                    ) -> ::core::result::Result<::prism::__private::SharedActor, ::prism::__private::ActorState>;
                }
                impl<T: ::core::any::Any + ::core::marker::Send + ::core::marker::Sync> __Shareable for __Probe<T> {
                    fn __share(
                        &self,
                        state: ::prism::__private::ActorState,
                    ) -> ::core::result::Result<::prism::__private::SharedActor, ::prism::__private::ActorState> {
                        ::prism::__private::share_actor::<T>(state)
                    }
                }
                trait __Alone {
                    fn __share(
                        &self,
                        state: ::prism::__private::ActorState,
                    ) -> ::core::result::Result<::prism::__private::SharedActor, ::prism::__private::ActorState> {
                        ::core::result::Result::Err(state)
                    }
                }
                impl<T> __Alone for &__Probe<T> {}
                (&__Probe::<#name>(::core::marker::PhantomData)).__share(__state)
            }
            ::prism::__private::inventory::submit! {
                ::prism::__private::ActorClass {
                    name: <#name as ::prism::__private::Actor>::CLASS,
                    hash: #new_hash,
                    create: __prism_create,
                    share: __prism_share,
                    is_async: #is_async,
                }
            }
            #(#registrations)*
        };
    }
}

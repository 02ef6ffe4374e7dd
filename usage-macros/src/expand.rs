//! Expansion: a tracked fn keeps its signature, attributes and body; its new body registers the
//! operation, starts a call guard, runs the original body in a closure (or an `async move` block),
//! classifies the value and hands the outcome to the guard. The logic lives in the runtime's
//! `__private` module, so the expansion stays a few readable lines.

use proc_macro2::{Delimiter, Group, Span, TokenStream};
use quote::{quote, quote_spanned, ToTokens};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::visit_mut::VisitMut;
use syn::{
    Attribute, Block, Expr, GenericArgument, ImplItem, Item, ItemImpl, Meta, PathArguments,
    ReturnType, Signature, Stmt, Type, TypeParamBound,
};

use crate::errors::Errors;
use crate::parse::{self, Args};
use crate::valid::{self, Site};

/// Entry point of `#[track_usage]`.
pub(crate) fn track_usage(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    let args = parse::args(args, &mut errors);
    let item = match syn::parse2::<Item>(item.clone()) {
        Ok(item) => item,
        // syn's own error points at the token it could not read (often in the body); the item is
        // handed back as written, so the compiler reports its own view of it too.
        Err(error) => {
            errors.push(error);
            let errors = errors.to_compile_errors();
            return quote!(#item #errors);
        }
    };
    match item {
        Item::Fn(mut function) => {
            let returns_stream = stream_kind(&function.sig).is_some();
            valid::function(&args, &function.sig, Site::Fn, returns_stream, &mut errors);
            if errors.is_empty() {
                let body = tracked_body(&args, &function.sig, &function.block, None);
                replace_body(&mut function.block, body);
            }
            let errors = errors.to_compile_errors();
            quote!(#function #errors)
        }
        Item::Impl(block) => impl_block(&args, block, errors),
        other => {
            valid::unsupported_item(&other, &mut errors);
            let errors = errors.to_compile_errors();
            quote!(#other #errors)
        }
    }
}

/// Tracks every method of an impl block; a method's own `#[track_usage(...)]` adds to or overrides
/// the block's arguments, and `#[track_usage(skip)]` leaves it untracked.
fn impl_block(args: &Args, mut block: ItemImpl, mut errors: Errors) -> TokenStream {
    valid::impl_block(args, &mut errors);
    let block_ok = errors.is_empty();
    let self_name = type_name(&block.self_ty);
    for item in &mut block.items {
        let ImplItem::Fn(method) = item else { continue };
        let mut method_errors = Errors::default();
        let mut own = own_args(&mut method.attrs, &mut method_errors);
        let returns_stream = stream_kind(&method.sig).is_some();
        valid::function(
            &own,
            &method.sig,
            Site::AnnotatedImpl,
            returns_stream,
            &mut method_errors,
        );
        if own.skip.get().is_none() && block_ok && method_errors.is_empty() {
            own.inherit(args);
            let body = tracked_body(&own, &method.sig, &method.block, self_name.as_deref());
            replace_body(&mut method.block, body);
        }
        errors.extend(method_errors);
    }
    let errors = errors.to_compile_errors();
    quote!(#block #errors)
}

/// Removes a method's `#[track_usage(...)]` attributes and parses their arguments.
fn own_args(attrs: &mut Vec<Attribute>, errors: &mut Errors) -> Args {
    let mut found: Vec<Attribute> = Vec::new();
    attrs.retain(|attr| {
        let ours = attr
            .path()
            .segments
            .last()
            .is_some_and(|segment| segment.ident == "track_usage");
        if ours {
            found.push(attr.clone());
        }
        !ours
    });
    let mut tokens = TokenStream::new();
    for (index, attr) in found.iter().enumerate() {
        if index > 0 {
            errors.at(
                attr.path().span(),
                "duplicate `#[track_usage]` on this method; merge the arguments into one",
            );
            continue;
        }
        match &attr.meta {
            Meta::Path(_) => {}
            Meta::List(list) => tokens = list.tokens.clone(),
            Meta::NameValue(pair) => errors.at(
                pair.eq_token.span,
                "expected `#[track_usage(...)]` or `#[track_usage]`",
            ),
        }
    }
    parse::args(tokens, errors)
}

fn replace_body(block: &mut Block, body: TokenStream) {
    *block = Block {
        brace_token: block.brace_token,
        stmts: vec![Stmt::Expr(Expr::Verbatim(body), None)],
    };
}

/// The last path segment of an impl's self type, used in the function path.
fn type_name(ty: &Type) -> Option<String> {
    match ty {
        Type::Path(path) => path
            .path
            .segments
            .last()
            .map(|s| s.ident.unraw().to_string()),
        _ => None,
    }
}

/// What kind of value the fn hands back, which decides how it is timed.
enum Shape {
    /// A plain fn: the body runs inside the call.
    Sync,
    /// A plain fn returning `!`: it can only end by panicking.
    Never,
    /// An `async fn`: the body runs when the future is polled.
    Async,
    /// A fn returning `impl Future<Output = T>`: construction runs at the call, the future's run
    /// is timed. With an `Unpin` bound, the tracked future is boxed to keep that promise.
    ImplFuture { output: Box<Type>, unpin: bool },
    /// A fn returning `Pin<Box<dyn Future<Output = T>>>` or `BoxFuture<'_, T>`, as `#[async_trait]`
    /// writes them.
    BoxedFuture { output: Box<Type> },
    /// `#[track_usage(stream)]` on a fn returning a stream: timed until the stream ends.
    Stream(StreamKind),
}

/// How a returned stream is written.
#[derive(Clone, Copy)]
pub(crate) enum StreamKind {
    /// `impl Stream<Item = T>`: the tracked stream is returned as is.
    Impl,
    /// `Pin<Box<dyn Stream<Item = T>>>` or `BoxStream<'_, T>`: the tracked stream is boxed.
    Boxed,
}

/// Whether the fn returns a stream, and how.
pub(crate) fn stream_kind(sig: &Signature) -> Option<StreamKind> {
    let ReturnType::Type(_, ty) = &sig.output else {
        return None;
    };
    let is_stream = |bounds: &syn::punctuated::Punctuated<TypeParamBound, syn::Token![+]>| {
        bounds.iter().any(|bound| {
            matches!(bound, TypeParamBound::Trait(t)
                if t.path.segments.last().is_some_and(|s| s.ident == "Stream"))
        })
    };
    match &**ty {
        Type::ImplTrait(imp) if is_stream(&imp.bounds) => return Some(StreamKind::Impl),
        _ => {}
    }
    for alias in ["BoxStream", "LocalBoxStream"] {
        if type_args(ty, alias).is_some() {
            return Some(StreamKind::Boxed);
        }
    }
    let pinned = type_args(ty, "Pin")?;
    let Some(GenericArgument::Type(boxed)) = pinned.first() else {
        return None;
    };
    match type_args(boxed, "Box")?.first() {
        Some(GenericArgument::Type(Type::TraitObject(object))) if is_stream(&object.bounds) => {
            Some(StreamKind::Boxed)
        }
        _ => None,
    }
}

fn shape(args: &Args, sig: &Signature) -> Shape {
    if args.stream.get().is_some() {
        if let Some(kind) = stream_kind(sig) {
            return Shape::Stream(kind);
        }
    }
    if sig.asyncness.is_some() {
        return Shape::Async;
    }
    let ReturnType::Type(_, ty) = &sig.output else {
        return Shape::Sync;
    };
    if let Type::Never(_) = &**ty {
        return Shape::Never;
    }
    if let Some(output) = impl_future_output(ty) {
        let unpin = matches!(&**ty, Type::ImplTrait(imp) if imp.bounds.iter().any(|bound| {
            matches!(bound, TypeParamBound::Trait(t)
                if t.path.segments.last().is_some_and(|s| s.ident == "Unpin"))
        }));
        return Shape::ImplFuture {
            output: Box::new(output),
            unpin,
        };
    }
    if let Some(output) = boxed_future_output(ty) {
        return Shape::BoxedFuture {
            output: Box::new(output),
        };
    }
    Shape::Sync
}

/// `Output = T` from a list of bounds containing `Future<Output = T>`.
fn future_output<'a>(bounds: impl IntoIterator<Item = &'a TypeParamBound>) -> Option<Type> {
    bounds.into_iter().find_map(|bound| {
        let TypeParamBound::Trait(bound) = bound else {
            return None;
        };
        let segment = bound.path.segments.last()?;
        if segment.ident != "Future" {
            return None;
        }
        let PathArguments::AngleBracketed(args) = &segment.arguments else {
            return None;
        };
        args.args.iter().find_map(|arg| match arg {
            GenericArgument::AssocType(assoc) if assoc.ident == "Output" => Some(assoc.ty.clone()),
            _ => None,
        })
    })
}

fn impl_future_output(ty: &Type) -> Option<Type> {
    match ty {
        Type::ImplTrait(imp) => future_output(&imp.bounds),
        Type::Paren(inner) => impl_future_output(&inner.elem),
        _ => None,
    }
}

fn type_args(ty: &Type, name: &str) -> Option<Vec<GenericArgument>> {
    let Type::Path(path) = ty else { return None };
    let segment = path.path.segments.last()?;
    if segment.ident != name {
        return None;
    }
    match &segment.arguments {
        PathArguments::AngleBracketed(args) => Some(args.args.iter().cloned().collect()),
        _ => None,
    }
}

fn boxed_future_output(ty: &Type) -> Option<Type> {
    for alias in ["BoxFuture", "LocalBoxFuture"] {
        if let Some(args) = type_args(ty, alias) {
            return args.into_iter().find_map(|arg| match arg {
                GenericArgument::Type(ty) => Some(ty),
                _ => None,
            });
        }
    }
    let pinned = type_args(ty, "Pin")?;
    let Some(GenericArgument::Type(boxed)) = pinned.first() else {
        return None;
    };
    let boxed = type_args(boxed, "Box")?;
    match boxed.first() {
        Some(GenericArgument::Type(Type::TraitObject(object))) => future_output(&object.bounds),
        _ => None,
    }
}

/// The return type with each `impl Trait` replaced by `_`, for a `let` annotation that fixes the
/// type of the body's value (so `?` inside the body knows its error type).
fn inferable(ty: &Type) -> Type {
    struct Infer;
    impl VisitMut for Infer {
        fn visit_type_mut(&mut self, ty: &mut Type) {
            if let Type::ImplTrait(_) = ty {
                *ty = syn::parse_quote!(_);
            } else {
                syn::visit_mut::visit_type_mut(self, ty);
            }
        }
    }
    let mut ty = ty.clone();
    Infer.visit_type_mut(&mut ty);
    ty
}

/// tracing-attributes' fake return edge (`return_edge!` in the runtime): an unreachable `return`
/// of the declared type placed first in the body, so the closure or `async` block it now runs in
/// takes that return type before the user's own `return`s and `?`s are checked, and they coerce
/// to it (`Box<dyn Error>`, trait objects) as they did in the fn.
///
/// The body stays a block of its own (its items and bindings keep their scope), now the value of
/// the block around it. Its braces are marked as generated, at the same place: braces around a
/// single expression on one line, in value position, are what `unused_braces` lints, and these
/// are the fn's own braces, which the user cannot remove.
fn with_return_edge(private: &TokenStream, ty: &Type, block: &Block) -> TokenStream {
    let stmts = &block.stmts;
    let mut body = Group::new(Delimiter::Brace, quote!(#(#stmts)*));
    body.set_span(Span::call_site().located_at(block.brace_token.span.join()));
    quote! {{
        #private::return_edge!(#ty);
        #body
    }}
}

fn return_type(sig: &Signature) -> Type {
    match &sig.output {
        ReturnType::Default => syn::parse_quote!(()),
        ReturnType::Type(_, ty) => inferable(ty),
    }
}

/// The new body of a tracked fn.
fn tracked_body(
    args: &Args,
    sig: &Signature,
    block: &Block,
    self_name: Option<&str>,
) -> TokenStream {
    let krate = match args.krate.get() {
        Some(path) => path.to_token_stream(),
        None => quote!(::usage_runtime),
    };
    let private = quote!(#krate::__private);
    let ident = &sig.ident;
    let fn_name = ident.unraw().to_string();
    let operation = match args.operation.get() {
        Some(lit) => lit.value(),
        None => fn_name.clone(),
    };
    let function = match self_name {
        Some(ty) => format!("{ty}::{fn_name}"),
        None => fn_name,
    };
    let capture_message = args.error_message.get().is_none_or(|flag| flag.value);
    // Spanned at the fn's name, whole path too: `line!` in the macro reads the line of its call.
    let at_name = respan(private.clone(), ident.span());
    let registration = quote_spanned! {ident.span()=>
        #at_name::operation!(#operation, #function, #capture_message);
    };
    let dims = dimensions(args, &private);
    let shape = shape(args, sig);
    let block = &match shape {
        // `!` cannot be named on stable, and a fn that never returns needs no edge.
        Shape::Never => block.to_token_stream(),
        _ => with_return_edge(&private, &return_type(sig), block),
    };
    let ret = quote!(&__usage_ret);
    let verdict = verdict(args, &private, &ret);
    let usage = usage(args, &private, &ret);

    match shape {
        Shape::Sync => {
            let ty = return_type(sig);
            quote! {
                #registration
                let mut __usage_guard = #private::CallGuard::start(&__USAGE_OPERATION, #dims);
                let __usage_ret: #ty = __usage_guard.run(move || #block);
                __usage_guard.finish(#verdict, #usage);
                __usage_ret
            }
        }
        Shape::Never => quote! {
            #registration
            let mut __usage_guard = #private::CallGuard::start(&__USAGE_OPERATION, #dims);
            __usage_guard.run(move || #block);
            ::core::unreachable!("a fn returning `!` returned")
        },
        Shape::Async => {
            let ty = return_type(sig);
            quote! {
                #registration
                let __usage_guard = #private::CallGuard::start(&__USAGE_OPERATION, #dims);
                let (__usage_guard, __usage_ret): (#private::CallGuard, #ty) =
                    #private::Guarded::new(__usage_guard, async move #block).await;
                __usage_guard.finish(#verdict, #usage);
                __usage_ret
            }
        }
        Shape::ImplFuture { output, unpin } => {
            let run = timed_future(&private, &inferable(&output), &verdict, &usage);
            let run = if unpin {
                quote!(::std::boxed::Box::pin(#run))
            } else {
                run
            };
            let call = called(&private, &dims, block, quote!(__usage_future));
            quote!(#registration #call #run)
        }
        Shape::BoxedFuture { output } => {
            let run = timed_future(&private, &inferable(&output), &verdict, &usage);
            let call = called(&private, &dims, block, quote!(__usage_future));
            quote!(#registration #call ::std::boxed::Box::pin(#run))
        }
        Shape::Stream(kind) => {
            let item = quote!(__usage_item);
            let verdict = self::verdict(args, &private, &item);
            let usage = self::usage(args, &private, &item);
            let tracked = quote! {
                #private::TrackedStream::new(
                    &__USAGE_OPERATION,
                    __usage_dims,
                    __usage_stream,
                    |__usage_item, __usage_call| __usage_call.observe(#verdict, #usage),
                )
            };
            let tracked = match kind {
                StreamKind::Impl => tracked,
                StreamKind::Boxed => quote!(::std::boxed::Box::pin(#tracked)),
            };
            let call = called(&private, &dims, block, quote!(__usage_stream));
            quote!(#registration #call #tracked)
        }
    }
}

/// `tokens` with every span set to `span`.
fn respan(tokens: TokenStream, span: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|mut tree| {
            if let proc_macro2::TokenTree::Group(group) = &tree {
                let mut inner =
                    proc_macro2::Group::new(group.delimiter(), respan(group.stream(), span));
                inner.set_span(span);
                tree = inner.into();
            } else {
                tree.set_span(span);
            }
            tree
        })
        .collect()
}

/// `__usage_dims` bound to the dimensions, then `binding` to what the body returns (the future
/// or stream it builds). The dimensions are read before the body runs (which may move what they
/// read), so a panic while the body runs is recorded with them.
fn called(
    private: &TokenStream,
    dims: &TokenStream,
    block: &TokenStream,
    binding: TokenStream,
) -> TokenStream {
    quote! {
        let __usage_dims = #dims;
        let #binding = #private::call(
            &__USAGE_OPERATION,
            ::core::option::Option::as_ref(&__usage_dims),
            move || #block,
        );
    }
}

/// An `async move` block that times `__usage_future` from its first poll to its completion.
fn timed_future(
    private: &TokenStream,
    output: &Type,
    verdict: &TokenStream,
    usage: &TokenStream,
) -> TokenStream {
    quote! {
        async move {
            let __usage_guard = #private::CallGuard::start(&__USAGE_OPERATION, __usage_dims);
            let (__usage_guard, __usage_ret): (#private::CallGuard, #output) =
                #private::Guarded::new(__usage_guard, __usage_future).await;
            __usage_guard.finish(#verdict, #usage);
            __usage_ret
        }
    }
}

/// `None`, or `Some(Dimensions { .. })` with each declared expression evaluated by reference, so
/// arguments are read, never moved.
fn dimensions(args: &Args, private: &TokenStream) -> TokenStream {
    let none = quote!(::core::option::Option::None);
    if args.tenant.get().is_none()
        && args.user.get().is_none()
        && args.session.get().is_none()
        && args.model.get().is_none()
        && args.fields.get().is_none()
    {
        return none;
    }
    let convert = |expr: Option<&Expr>, field: &str, helper: &str| {
        expr.map(|expr| {
            let field = syn::Ident::new(field, Span::call_site());
            let helper = syn::Ident::new(helper, Span::call_site());
            quote_spanned!(expr.span()=> #field: #private::#helper(&(#expr)),)
        })
    };
    let tenant = convert(args.tenant.get(), "tenant", "tenant");
    let user = convert(args.user.get(), "user", "id");
    let session = convert(args.session.get(), "session", "id");
    let model = convert(args.model.get(), "model", "model");
    let fields = args.fields.get().map(|fields| {
        let fields = fields.iter().map(|field| {
            let key = field.key.unraw().to_string();
            let value = &field.value;
            quote_spanned!(value.span()=> (#key, #private::field(&(#value))))
        });
        quote!(fields: #private::fields([#(#fields),*]),)
    });
    quote! {
        ::core::option::Option::Some(#private::Dimensions {
            #tenant #user #session #model #fields
            ..#private::Dimensions::NONE
        })
    }
}

/// How the value behind `value` (an expression of type `&T`: the returned value, or a stream
/// item) is classified.
fn verdict(args: &Args, private: &TokenStream, value: &TokenStream) -> TokenStream {
    let natural = quote!(#private::verdict!(#value));
    let type_name = quote!(#private::type_name_of_val(#value));
    if let Some(ok_if) = args.ok_if.get() {
        let test = quote_spanned!(ok_if.span()=> #private::test(#value, #ok_if));
        quote!(#private::ok_if(#test, #natural, #type_name))
    } else if let Some(error_if) = args.error_if.get() {
        let test = quote_spanned!(error_if.span()=> #private::test(#value, #error_if));
        quote!(#private::error_if(#test, #natural, #type_name))
    } else {
        natural
    }
}

/// The token usage read off the value behind `value`: through `tokens = f`, else its `UsageReport` impl, if any.
fn usage(args: &Args, private: &TokenStream, value: &TokenStream) -> TokenStream {
    match args.tokens.get() {
        Some(tokens) => quote_spanned!(tokens.span()=> #private::report!(#value, tokens = #tokens)),
        None => quote!(#private::report!(#value)),
    }
}

//! Validation: the rules that involve the annotated item or more than one argument, each reported
//! at the offending token.

use proc_macro2::Span;
use syn::spanned::Spanned;
use syn::{Item, Signature};

use crate::errors::Errors;
use crate::parse::Args;

/// Where a fn's attribute sits.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Site {
    /// `#[track_usage]` directly on a fn or method.
    Fn,
    /// A method inside a `#[track_usage]` impl block.
    AnnotatedImpl,
}

/// Checks the arguments for one fn; `returns_stream` says whether its return type is a stream.
pub(crate) fn function(
    args: &Args,
    sig: &Signature,
    site: Site,
    returns_stream: bool,
    errors: &mut Errors,
) {
    if let Some(constness) = &sig.constness {
        errors.at(
            constness.span,
            "`#[track_usage]` cannot track a `const fn`: tracking reads the clock and hands the \
             record to the tracker, which const evaluation cannot do",
        );
    }
    if let Some(span) = args.skip.span() {
        if site == Site::Fn {
            errors.at(
                span,
                "`skip` only applies to a method inside a `#[track_usage]` impl block; \
                 to leave this fn untracked, remove the attribute",
            );
        } else {
            skip_alone(args, errors);
        }
    }
    stream(args, sig, returns_stream, errors);
    one_classifier(args, errors);
}

/// Checks the arguments written on an impl block.
pub(crate) fn impl_block(args: &Args, errors: &mut Errors) {
    if let Some(span) = args.operation.span() {
        errors.at(
            span,
            "`operation` names one fn; on an impl block each method is tracked under its own \
             name. Put `#[track_usage(operation = \"...\")]` on the method instead",
        );
    }
    if let Some(span) = args.skip.span() {
        errors.at(
            span,
            "`skip` goes on a method inside a `#[track_usage]` impl block, not on the block",
        );
    }
    if let Some(span) = args.stream.span() {
        errors.at(
            span,
            "`stream` goes on a fn that returns a stream, not on an impl block",
        );
    }
    one_classifier(args, errors);
}

/// Checks that `stream` sits on a non-async fn returning a stream.
fn stream(args: &Args, sig: &Signature, returns_stream: bool, errors: &mut Errors) {
    let Some(span) = args.stream.span() else {
        return;
    };
    if let Some(asyncness) = &sig.asyncness {
        errors.at(
            asyncness.span,
            "`stream` tracks a fn that returns a stream; make it a plain fn returning \
             `impl Stream<Item = ...>` (an `async fn` is tracked without `stream`)",
        );
    } else if !returns_stream {
        let at = match &sig.output {
            syn::ReturnType::Type(_, ty) => ty.span(),
            syn::ReturnType::Default => span,
        };
        errors.at(
            at,
            "`stream` needs a return type of `impl Stream<Item = ...>`, \
             `Pin<Box<dyn Stream<Item = ...>>>` or `BoxStream<'_, ...>`",
        );
    }
}

/// Reports use on anything but a fn or an impl block, at the item's keyword.
pub(crate) fn unsupported_item(item: &Item, errors: &mut Errors) {
    let (span, what) = match item {
        Item::Struct(s) => (s.struct_token.span, "a struct"),
        Item::Enum(e) => (e.enum_token.span, "an enum"),
        Item::Union(u) => (u.union_token.span, "a union"),
        Item::Trait(t) => (t.trait_token.span, "a trait definition"),
        Item::Mod(m) => (m.mod_token.span, "a module"),
        Item::Const(c) => (c.const_token.span, "a const"),
        Item::Static(s) => (s.static_token.span, "a static"),
        Item::Type(t) => (t.type_token.span, "a type alias"),
        Item::Use(u) => (u.use_token.span, "a use declaration"),
        Item::ExternCrate(e) => (e.extern_token.span, "an extern crate"),
        Item::ForeignMod(f) => (f.abi.extern_token.span, "an extern block"),
        Item::Macro(m) => (m.mac.path.span(), "a macro invocation"),
        other => (other.span(), "this item"),
    };
    errors.at(
        span,
        format_args!("`#[track_usage]` applies to a fn or an impl block, not to {what}"),
    );
}

fn one_classifier(args: &Args, errors: &mut Errors) {
    if let (Some(_), Some(span)) = (args.ok_if.span(), args.error_if.span()) {
        errors.at(
            span,
            "`ok_if` and `error_if` both decide the outcome; keep one of them",
        );
    }
}

fn skip_alone(args: &Args, errors: &mut Errors) {
    let others: [Option<Span>; 12] = [
        args.operation.span(),
        args.tenant.span(),
        args.user.span(),
        args.session.span(),
        args.fields.span(),
        args.error_message.span(),
        args.ok_if.span(),
        args.error_if.span(),
        args.tokens.span(),
        args.model.span(),
        args.stream.span(),
        args.krate.span(),
    ];
    for span in others.into_iter().flatten() {
        errors.at(
            span,
            "a skipped method is not tracked; remove this argument or `skip`",
        );
    }
}

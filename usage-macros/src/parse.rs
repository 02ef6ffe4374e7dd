//! Parsing: the attribute's tokens into [`Args`], collecting every mistake into [`Errors`].
//!
//! Syntax is read leniently first (`key`, `key = expr` or `key(...)`), then each key is interpreted;
//! an unknown key, a duplicate or a value of the wrong kind is reported at its own token and parsing
//! goes on, so one compile shows every mistake in the attribute.

use proc_macro2::{Span, TokenStream};
use syn::ext::IdentExt;
use syn::parse::{ParseStream, Parser};
use syn::spanned::Spanned;
use syn::{Expr, Ident, Lit, LitBool, LitStr, Path, Token};

use crate::errors::Errors;

/// Every argument the attribute accepts, in the order the docs list them.
pub(crate) const ARGUMENTS: &[&str] = &[
    "operation",
    "tenant",
    "user",
    "session",
    "fields",
    "error_message",
    "ok_if",
    "error_if",
    "tokens",
    "model",
    "stream",
    "crate",
    "skip",
];

/// Names users reach for that mean one of ours.
const ALIASES: &[(&str, &str)] = &[
    ("name", "operation"),
    ("op", "operation"),
    ("tenant_id", "tenant"),
    ("org", "tenant"),
    ("org_id", "tenant"),
    ("organization", "tenant"),
    ("user_id", "user"),
    ("session_id", "session"),
    ("attributes", "fields"),
    ("attrs", "fields"),
    ("err", "error_if"),
    ("usage", "tokens"),
    ("token_usage", "tokens"),
    ("model_name", "model"),
    ("streaming", "stream"),
];

/// One argument's value and the span of its key; set at most once.
pub(crate) struct Attr<T> {
    name: &'static str,
    value: Option<(Span, T)>,
}

impl<T> Attr<T> {
    fn none(name: &'static str) -> Self {
        Attr { name, value: None }
    }

    /// Sets the value, or reports a duplicate at the second key.
    fn set(&mut self, key: &Ident, value: T, errors: &mut Errors) {
        if self.value.is_some() {
            errors.at(
                key.span(),
                format_args!("duplicate argument `{}`", self.name),
            );
        } else {
            self.value = Some((key.span(), value));
        }
    }

    pub(crate) fn get(&self) -> Option<&T> {
        self.value.as_ref().map(|(_, value)| value)
    }

    /// The span of the key, when set.
    pub(crate) fn span(&self) -> Option<Span> {
        self.value.as_ref().map(|(span, _)| *span)
    }

    /// Takes `parent`'s value when this one is unset (method arguments override the impl block's).
    fn inherit(&mut self, parent: &Attr<T>)
    where
        T: Clone,
    {
        if self.value.is_none() {
            self.value.clone_from(&parent.value);
        }
    }
}

/// One `key = value` inside `fields(...)`.
#[derive(Clone)]
pub(crate) struct Field {
    pub(crate) key: Ident,
    pub(crate) value: Expr,
}

/// The attribute's arguments, each with the span of its key.
pub(crate) struct Args {
    pub(crate) operation: Attr<LitStr>,
    pub(crate) tenant: Attr<Expr>,
    pub(crate) user: Attr<Expr>,
    pub(crate) session: Attr<Expr>,
    pub(crate) fields: Attr<Vec<Field>>,
    pub(crate) error_message: Attr<LitBool>,
    pub(crate) ok_if: Attr<Expr>,
    pub(crate) error_if: Attr<Expr>,
    pub(crate) tokens: Attr<Expr>,
    pub(crate) model: Attr<Expr>,
    pub(crate) stream: Attr<()>,
    pub(crate) krate: Attr<Path>,
    pub(crate) skip: Attr<()>,
}

impl Args {
    fn empty() -> Self {
        Args {
            operation: Attr::none("operation"),
            tenant: Attr::none("tenant"),
            user: Attr::none("user"),
            session: Attr::none("session"),
            fields: Attr::none("fields"),
            error_message: Attr::none("error_message"),
            ok_if: Attr::none("ok_if"),
            error_if: Attr::none("error_if"),
            tokens: Attr::none("tokens"),
            model: Attr::none("model"),
            stream: Attr::none("stream"),
            krate: Attr::none("crate"),
            skip: Attr::none("skip"),
        }
    }

    /// Fills every unset argument from the enclosing impl block's attribute. `operation`, `skip`
    /// and `stream` are per method and never inherited; a method's `ok_if` replaces the block's
    /// `error_if`.
    pub(crate) fn inherit(&mut self, parent: &Args) {
        self.tenant.inherit(&parent.tenant);
        self.user.inherit(&parent.user);
        self.session.inherit(&parent.session);
        self.fields.inherit(&parent.fields);
        self.model.inherit(&parent.model);
        self.tokens.inherit(&parent.tokens);
        self.error_message.inherit(&parent.error_message);
        if self.ok_if.get().is_none() && self.error_if.get().is_none() {
            self.ok_if.inherit(&parent.ok_if);
            self.error_if.inherit(&parent.error_if);
        }
        self.krate.inherit(&parent.krate);
    }
}

/// A key and its raw value, before interpretation.
struct RawArg {
    key: Ident,
    value: RawValue,
}

enum RawValue {
    None,
    Expr(Expr),
    List(Span, TokenStream),
}

fn raw_args(input: ParseStream<'_>) -> syn::Result<Vec<RawArg>> {
    let mut args = Vec::new();
    while !input.is_empty() {
        let key = input.call(Ident::parse_any)?;
        let value = if input.peek(Token![=]) {
            input.parse::<Token![=]>()?;
            RawValue::Expr(input.parse()?)
        } else if input.peek(syn::token::Paren) {
            let content;
            let paren = syn::parenthesized!(content in input);
            RawValue::List(paren.span.join(), content.parse()?)
        } else {
            RawValue::None
        };
        args.push(RawArg { key, value });
        if input.is_empty() {
            break;
        }
        input.parse::<Token![,]>()?;
    }
    Ok(args)
}

/// Parses the attribute's arguments, reporting each mistake at its token.
pub(crate) fn args(tokens: TokenStream, errors: &mut Errors) -> Args {
    let mut args = Args::empty();
    let raw = match raw_args.parse2(tokens) {
        Ok(raw) => raw,
        Err(error) => {
            errors.push(error);
            return args;
        }
    };
    for RawArg { key, value } in raw {
        let name = key.unraw().to_string();
        match name.as_str() {
            "operation" => {
                if let Some(lit) = string_value(&key, value, errors) {
                    if lit.value().trim().is_empty() {
                        errors.at(lit.span(), "`operation` must not be empty");
                    } else {
                        args.operation.set(&key, lit, errors);
                    }
                }
            }
            "tenant" => expr_value(&key, value, errors, |expr, e| {
                args.tenant.set(&key, expr, e)
            }),
            "user" => expr_value(&key, value, errors, |expr, e| args.user.set(&key, expr, e)),
            "session" => expr_value(&key, value, errors, |expr, e| {
                args.session.set(&key, expr, e)
            }),
            "ok_if" => expr_value(&key, value, errors, |expr, e| args.ok_if.set(&key, expr, e)),
            "error_if" => expr_value(&key, value, errors, |expr, e| {
                args.error_if.set(&key, expr, e)
            }),
            "tokens" => expr_value(&key, value, errors, |expr, e| {
                args.tokens.set(&key, expr, e)
            }),
            "model" => expr_value(&key, value, errors, |expr, e| args.model.set(&key, expr, e)),
            "fields" => match value {
                RawValue::List(_, tokens) => {
                    if let Some(fields) = fields(tokens, errors) {
                        args.fields.set(&key, fields, errors);
                    }
                }
                _ => errors.at(
                    key.span(),
                    "expected `fields(key = expr, ...)`, e.g. fields(model = req.model.clone())",
                ),
            },
            "error_message" => match value {
                RawValue::Expr(Expr::Lit(syn::ExprLit {
                    lit: Lit::Bool(flag),
                    ..
                })) => args.error_message.set(&key, flag, errors),
                RawValue::Expr(other) => {
                    errors.at(other.span(), "`error_message` takes `true` or `false`")
                }
                _ => errors.at(key.span(), "expected `error_message = false`"),
            },
            "crate" => match value {
                RawValue::Expr(Expr::Path(path)) if path.qself.is_none() => {
                    args.krate.set(&key, path.path, errors)
                }
                RawValue::Expr(other) => errors.at(
                    other.span(),
                    "`crate` takes a path to the runtime crate, e.g. crate = ::my_usage_runtime",
                ),
                _ => errors.at(key.span(), "expected `crate = path::to::usage_runtime`"),
            },
            "skip" => flag(&key, value, errors, |e| args.skip.set(&key, (), e)),
            "stream" => flag(&key, value, errors, |e| args.stream.set(&key, (), e)),
            _ => errors.at(key.span(), unknown_argument(&name)),
        }
    }
    args
}

fn unknown_argument(name: &str) -> String {
    let hint = ALIASES
        .iter()
        .find(|(alias, _)| *alias == name)
        .map(|(_, ours)| format!("; did you mean `{ours}`?"))
        .unwrap_or_default();
    format!(
        "unknown argument `{name}`{hint}\nexpected one of: {}",
        ARGUMENTS.join(", ")
    )
}

fn string_value(key: &Ident, value: RawValue, errors: &mut Errors) -> Option<LitStr> {
    match value {
        RawValue::Expr(Expr::Lit(syn::ExprLit {
            lit: Lit::Str(lit), ..
        })) => Some(lit),
        RawValue::Expr(other) => {
            errors.at(
                other.span(),
                format_args!("`{key}` must be a string literal, e.g. {key} = \"chat\""),
            );
            None
        }
        _ => {
            errors.at(key.span(), format_args!("expected `{key} = \"...\"`"));
            None
        }
    }
}

fn expr_value(
    key: &Ident,
    value: RawValue,
    errors: &mut Errors,
    set: impl FnOnce(Expr, &mut Errors),
) {
    match value {
        RawValue::Expr(expr) => set(expr, errors),
        _ => errors.at(key.span(), format_args!("expected `{key} = <expression>`")),
    }
}

fn flag(key: &Ident, value: RawValue, errors: &mut Errors, set: impl FnOnce(&mut Errors)) {
    match value {
        RawValue::None => set(errors),
        RawValue::Expr(expr) => errors.at(expr.span(), format_args!("`{key}` takes no value")),
        RawValue::List(span, _) => errors.at(span, format_args!("`{key}` takes no value")),
    }
}

fn fields(tokens: TokenStream, errors: &mut Errors) -> Option<Vec<Field>> {
    let parsed = (|input: ParseStream<'_>| {
        let mut fields = Vec::new();
        while !input.is_empty() {
            let key = input.call(Ident::parse_any)?;
            input.parse::<Token![=]>()?;
            let value: Expr = input.parse()?;
            fields.push(Field { key, value });
            if input.is_empty() {
                break;
            }
            input.parse::<Token![,]>()?;
        }
        Ok(fields)
    })
    .parse2(tokens);
    let fields = match parsed {
        Ok(fields) => fields,
        Err(error) => {
            errors.push(error);
            return None;
        }
    };
    let mut seen: Vec<String> = Vec::new();
    for field in &fields {
        let name = field.key.unraw().to_string();
        if seen.contains(&name) {
            errors.at(field.key.span(), format_args!("duplicate field `{name}`"));
        } else {
            seen.push(name);
        }
    }
    Some(fields)
}

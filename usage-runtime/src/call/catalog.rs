//! The link-time catalog of tracked operations: every `#[track_usage]` fn registers one
//! [`Operation`] through `inventory`, whether or not it is ever called.

/// A tracked operation: one annotated fn.
#[derive(Debug)]
pub struct Operation {
    name: &'static str,
    function: &'static str,
    file: &'static str,
    line: u32,
    capture_error_message: bool,
}

impl Operation {
    #[doc(hidden)]
    pub const fn new(
        name: &'static str,
        function: &'static str,
        file: &'static str,
        line: u32,
        capture_error_message: bool,
    ) -> Self {
        Operation {
            name,
            function,
            file,
            line,
            capture_error_message,
        }
    }

    /// The operation name (`operation = "..."`, else the fn's name).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The annotated fn's path, `module::path::fn_name`.
    pub fn function(&self) -> &'static str {
        self.function
    }

    /// The source file of the annotated fn.
    pub fn file(&self) -> &'static str {
        self.file
    }

    /// The line of the annotated fn's name.
    pub fn line(&self) -> u32 {
        self.line
    }

    /// Whether error text is recorded (`error_message = false` turns it off).
    pub fn captures_error_message(&self) -> bool {
        self.capture_error_message
    }
}

#[doc(hidden)]
#[derive(Debug)]
pub struct Registration(pub &'static Operation);

inventory::collect!(Registration);

/// Declares a tracked fn's `__USAGE_OPERATION` and registers it in the catalog (generated code
/// only). `file!`, `line!` and `module_path!` name the fn, where the attribute's expansion puts
/// this call.
#[doc(hidden)]
#[macro_export]
macro_rules! __usage_operation {
    ($name:expr, $function:expr, $capture_error_message:expr) => {
        static __USAGE_OPERATION: $crate::__private::Operation = $crate::__private::Operation::new(
            $name,
            ::core::concat!(::core::module_path!(), "::", $function),
            ::core::file!(),
            ::core::line!(),
            $capture_error_message,
        );
        $crate::__private::inventory::submit! {
            $crate::__private::Registration(&__USAGE_OPERATION)
        }
    };
}

/// Every tracked operation linked into this program, sorted by operation name then function path.
///
/// ```
/// # use usage_runtime::track_usage;
/// #[track_usage(operation = "chat")]
/// fn chat() {}
///
/// let ops = usage_runtime::catalog::operations();
/// let chat = ops.iter().find(|op| op.name() == "chat").unwrap();
/// assert!(chat.function().ends_with("::chat"));
/// ```
pub fn operations() -> Vec<&'static Operation> {
    let mut ops: Vec<&'static Operation> = inventory::iter::<Registration>
        .into_iter()
        .map(|registration| registration.0)
        .collect();
    ops.sort_by(|a, b| {
        (a.name, a.function, a.file, a.line).cmp(&(b.name, b.function, b.file, b.line))
    });
    ops.dedup_by(|a, b| std::ptr::eq(*a, *b));
    ops
}

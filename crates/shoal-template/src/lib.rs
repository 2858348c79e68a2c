//! ARM template expressions (`"[concat(parameters('p'), '-x')]"`): a parser, an evaluator
//! over `serde_json::Value`, and a walk that evaluates every expression in a JSON tree and
//! names the JSON path of the one that fails.
//!
//! Input is untrusted (a template PUT by any caller): parsing and evaluation are bounded in
//! input size, nesting depth and result size, and every failure is an [`ExprError`], never
//! a panic.

mod eval;
pub mod jsonc;
mod parse;
mod tree;

pub use eval::{evaluate, Context, FUNCTIONS};
pub use parse::{parse, Expr, MAX_DEPTH, MAX_EXPR_LEN};
pub use tree::{check_tree, eval_string, eval_tree, is_expression, TreeError};

/// Longest string or array an expression may produce.
pub const MAX_VALUE_LEN: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExprError {
    /// The text is not an expression the grammar accepts.
    #[error("the expression '{expr}' is not valid: {reason}")]
    Syntax { expr: String, reason: String },
    /// A function Shoal does not implement.
    #[error("the template function '{0}' is not supported")]
    Unsupported(String),
    /// A supported function called wrongly or failing on its input.
    #[error("{0}")]
    Invalid(String),
}

impl ExprError {
    pub(crate) fn invalid(msg: impl Into<String>) -> Self {
        ExprError::Invalid(msg.into())
    }
}

//! What compilation reports: errors that stop a chatbot from compiling and warnings
//! that do not, each naming the node (id and label) it is about.

use std::fmt;

use super::limits::{MAX_BUTTONS, MAX_LIST_ROWS};

/// The node a report is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRef {
    pub id: String,
    pub label: String,
}

impl fmt::Display for NodeRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.label.is_empty() {
            write!(f, "node `{}`", self.id)
        } else {
            write!(f, "node `{}` ({})", self.id, self.label)
        }
    }
}

/// One reason a chatbot cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("the chatbot has no start node")]
    NoStartNode,
    #[error("the chatbot has {0} start nodes; exactly one is allowed")]
    SeveralStartNodes(usize),
    #[error("a node has no id")]
    MissingNodeId,
    #[error("the node id is used by another node too")]
    DuplicateNodeId,
    #[error("the node has no type")]
    MissingNodeType,
    #[error("unknown node type `{0}`")]
    UnknownNodeType(String),
    #[error("edge `{edge}` points to node `{target}`, which does not exist")]
    EdgeToMissingNode { edge: String, target: String },
    #[error("edge `{edge}` leaves from node `{source_id}`, which does not exist")]
    EdgeFromMissingNode { edge: String, source_id: String },
    #[error("edge #{0} has no source or no target")]
    MalformedEdge(usize),
    #[error("{0} buttons; WhatsApp allows at most {max}", max = MAX_BUTTONS)]
    TooManyButtons(usize),
    #[error("{0} list rows; WhatsApp allows at most {max}", max = MAX_LIST_ROWS)]
    TooManyListRows(usize),
    #[error("choice id `{0}` is used twice")]
    DuplicateChoiceId(String),
    #[error("required field `{0}` is missing or empty")]
    MissingField(&'static str),
    #[error("field `{field}`: {reason}")]
    InvalidField { field: &'static str, reason: String },
}

/// A compilation error: the problem and the node it was found on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    pub node: Option<NodeRef>,
    pub problem: Problem,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.node {
            Some(node) => write!(f, "{node}: {}", self.problem),
            None => write!(f, "{}", self.problem),
        }
    }
}

impl std::error::Error for ValidationError {}

/// Something that compiles but is probably a mistake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub node: NodeRef,
    pub kind: WarningKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WarningKind {
    /// No path from the start node reaches this node.
    Unreachable,
    /// The node can leave by this handle but no edge starts there.
    UnusedHandle(String),
    /// An edge starts at a handle the node does not have.
    UnknownHandle { edge: String, handle: String },
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            WarningKind::Unreachable => write!(f, "{}: unreachable from the start node", self.node),
            WarningKind::UnusedHandle(handle) => {
                write!(f, "{}: no edge leaves handle `{handle}`", self.node)
            }
            WarningKind::UnknownHandle { edge, handle } => write!(
                f,
                "{}: edge `{edge}` leaves handle `{handle}`, which the node does not have",
                self.node
            ),
        }
    }
}

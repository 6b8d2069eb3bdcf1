//! What compilation reports: errors that stop a chatbot from compiling and warnings
//! that do not, each naming the node (id and label) it is about.

use std::fmt;

use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::NodeFiltered;

use super::limits::{BUTTONS, ROWS};

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
    #[error("{0} buttons; WhatsApp allows at most {max}", max = BUTTONS)]
    TooManyButtons(usize),
    #[error("{0} list rows; WhatsApp allows at most {max}", max = ROWS)]
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
    /// These nodes (ids, in document order) form a cycle with no question or Flow
    /// in it: one turn would go round it without waiting for the customer.
    CycleWithoutWait(Vec<String>),
    /// A buttons or list question with neither a `default` nor an `exhausted` edge:
    /// typed text is asked again (`retries` times) and then ends the conversation.
    NoPathForTypedText { retries: u32 },
    /// A location question with no `exhausted` edge: a customer on WhatsApp Web or
    /// Desktop cannot share a location, is asked again `retries` times, and then
    /// the conversation ends.
    LocationWithoutExhausted { retries: u32 },
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
            WarningKind::CycleWithoutWait(ids) => {
                let ids: Vec<String> = ids.iter().map(|id| format!("`{id}`")).collect();
                write!(
                    f,
                    "{}: nodes {} form a cycle with no question or Flow to wait at; \
                     one message would send messages until the loop guard stops it",
                    self.node,
                    ids.join(", ")
                )
            }
            WarningKind::NoPathForTypedText { retries } => write!(
                f,
                "{}: typed text has no path (no `default` or `exhausted` edge): the question \
                 is asked again {retries} {}, then the conversation ends ({})",
                self.node,
                if *retries == 1 { "time" } else { "times" },
                super::context::reason::NO_PATH_FOR_TYPED_TEXT
            ),
            WarningKind::LocationWithoutExhausted { retries } => write!(
                f,
                "{}: a location question without an `exhausted` edge: WhatsApp Web and \
                 Desktop cannot share a location, so a customer there is asked again \
                 {retries} {}, then the conversation ends ({})",
                self.node,
                if *retries == 1 { "time" } else { "times" },
                super::context::reason::VALIDATION_FAILED
            ),
        }
    }
}

/// One warning per cycle of nodes that never wait (a strongly connected set of
/// non-waiting nodes, or one with an edge to itself), naming the cycle's first node
/// in document order. Generic over the graph so that the compiler can call it
/// without this module knowing the compiled node type.
pub fn cycles_without_wait<N, E>(
    graph: &DiGraph<N, E>,
    waits: impl Fn(&N) -> bool,
    node_ref: impl Fn(&N) -> NodeRef,
) -> Vec<Warning> {
    let moving = NodeFiltered::from_fn(graph, |n: NodeIndex| !waits(&graph[n]));
    let mut warnings: Vec<(NodeIndex, Warning)> = tarjan_scc(&moving)
        .into_iter()
        .filter(|scc| scc.len() > 1 || graph.contains_edge(scc[0], scc[0]))
        .map(|mut scc| {
            scc.sort();
            let ids = scc.iter().map(|&n| node_ref(&graph[n]).id).collect();
            let first = scc[0];
            (
                first,
                Warning {
                    node: node_ref(&graph[first]),
                    kind: WarningKind::CycleWithoutWait(ids),
                },
            )
        })
        .collect();
    warnings.sort_by_key(|(first, _)| *first);
    warnings.into_iter().map(|(_, w)| w).collect()
}

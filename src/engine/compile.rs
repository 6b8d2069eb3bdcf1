//! Compiling a chatbot document into an immutable petgraph graph: node lookup by
//! id, outgoing edges by handle, the editor's variable names, and every problem
//! reported at once.

use std::collections::{HashMap, VecDeque};

use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::{Dfs, EdgeRef};
use serde_json::Value;

use super::doc::{ChatbotDoc, Fields};
use super::node::{NodeKind, QuestionType};
use super::parse::parse_kind;
use super::validate::{NodeRef, Problem, ValidationError, Warning, WarningKind};

/// A chatbot ready to run: immutable, `Send + Sync`, shared through an `Arc`.
#[derive(Debug)]
pub struct CompiledChatbot {
    name: String,
    graph: DiGraph<Node, Edge>,
    by_id: HashMap<String, NodeIndex>,
    start: NodeIndex,
    trigger_keywords: Vec<String>,
    restart_keywords: Vec<String>,
    handover_keywords: Vec<String>,
    handover_message: Option<String>,
    /// The version ([`super::version::hash`]) it was compiled from, when the caller
    /// named one: a context started on it is pinned to it.
    version: Option<String>,
}

/// One node of a compiled chatbot.
#[derive(Debug)]
pub struct Node {
    pub id: String,
    pub label: String,
    pub kind: NodeKind,
    /// The editor's name of the node's outputs (`question_2`, `flow_1`), fixed by
    /// Kahn's order at compile time.
    pub var_name: Option<String>,
    /// Outgoing edges in the order of the document's `edges` array, which decides
    /// which edge wins when several share a handle.
    pub out: Vec<OutEdge>,
    /// `data.handover: true` on a message or question node: its text is sent, then
    /// the conversation waits for a person (the context ends, `handover`).
    pub handover: bool,
}

#[derive(Debug, Clone)]
pub struct OutEdge {
    pub id: String,
    pub handle: Option<String>,
    pub target: NodeIndex,
}

/// The weight of a graph edge: the edge id and its source handle.
#[derive(Debug, Clone)]
pub struct Edge {
    pub id: String,
    pub handle: Option<String>,
}

impl OutEdge {
    fn is_default(&self) -> bool {
        matches!(self.handle.as_deref(), None | Some("default"))
    }
}

/// Compiles a document (bare or WhatsApp Builder's export) given as JSON.
pub fn compile_json(
    value: &Value,
) -> Result<(CompiledChatbot, Vec<Warning>), Vec<ValidationError>> {
    match ChatbotDoc::from_json(value) {
        Ok(doc) => compile(&doc),
        Err(e) => Err(vec![ValidationError {
            node: None,
            problem: Problem::InvalidField {
                field: "document",
                reason: e.to_string(),
            },
        }]),
    }
}

/// Compiles a chatbot, reporting every error at once; warnings come with success.
pub fn compile(doc: &ChatbotDoc) -> Result<(CompiledChatbot, Vec<Warning>), Vec<ValidationError>> {
    let mut errors = Vec::new();
    let mut graph: DiGraph<Node, Edge> = DiGraph::new();
    let mut by_id: HashMap<String, NodeIndex> = HashMap::new();
    let mut starts = Vec::new();

    for raw in &doc.nodes {
        let empty = serde_json::Map::new();
        let data = raw.get("data").and_then(Value::as_object).unwrap_or(&empty);
        let label = Fields(data).string("label").unwrap_or_default();
        let Some(id) = raw
            .get("id")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        else {
            errors.push(ValidationError {
                node: (!label.is_empty()).then(|| NodeRef {
                    id: String::new(),
                    label,
                }),
                problem: Problem::MissingNodeId,
            });
            continue;
        };
        let node_ref = NodeRef {
            id: id.to_owned(),
            label: label.clone(),
        };
        let type_name = raw
            .get("type")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .or_else(|| data.get("type").and_then(Value::as_str));
        let mut problems = Vec::new();
        let kind = match type_name {
            Some(t) => parse_kind(t, Fields(data), &mut problems),
            None => {
                problems.push(Problem::MissingNodeType);
                None
            }
        };
        errors.extend(problems.into_iter().map(|problem| ValidationError {
            node: Some(node_ref.clone()),
            problem,
        }));
        if by_id.contains_key(id) {
            errors.push(ValidationError {
                node: Some(node_ref),
                problem: Problem::DuplicateNodeId,
            });
            continue;
        }
        let Some(kind) = kind else { continue };
        let is_start = matches!(kind, NodeKind::Start);
        let handover = matches!(kind, NodeKind::Message(_) | NodeKind::Question(_))
            && data.get("handover").and_then(Value::as_bool) == Some(true);
        let index = graph.add_node(Node {
            id: id.to_owned(),
            label,
            kind,
            var_name: None,
            out: Vec::new(),
            handover,
        });
        if is_start {
            starts.push(index);
        }
        by_id.insert(id.to_owned(), index);
    }

    let node_ids: std::collections::HashSet<&str> = doc
        .nodes
        .iter()
        .filter_map(|n| n.get("id").and_then(Value::as_str))
        .collect();
    for (position, raw) in doc.edges.iter().enumerate() {
        let text = |k: &str| raw.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
        let (Some(source), Some(target)) = (text("source"), text("target")) else {
            errors.push(ValidationError {
                node: None,
                problem: Problem::MalformedEdge(position),
            });
            continue;
        };
        let edge_id = text("id")
            .map(str::to_owned)
            .unwrap_or_else(|| format!("#{position}"));
        let handle = text("sourceHandle").map(str::to_owned);
        match (by_id.get(source), by_id.get(target)) {
            (Some(&from), Some(&to)) => {
                graph.add_edge(
                    from,
                    to,
                    Edge {
                        id: edge_id.clone(),
                        handle: handle.clone(),
                    },
                );
                graph[from].out.push(OutEdge {
                    id: edge_id,
                    handle,
                    target: to,
                });
            }
            (Some(&from), None) if !node_ids.contains(target) => errors.push(ValidationError {
                node: Some(node_ref(&graph[from])),
                problem: Problem::EdgeToMissingNode {
                    edge: edge_id,
                    target: target.to_owned(),
                },
            }),
            (None, _) if !node_ids.contains(source) => errors.push(ValidationError {
                node: by_id.get(target).map(|&t| node_ref(&graph[t])),
                problem: Problem::EdgeFromMissingNode {
                    edge: edge_id,
                    source_id: source.to_owned(),
                },
            }),
            // An end is a node that failed to compile; its own error is reported.
            _ => {}
        }
    }

    match starts.len() {
        1 => {}
        0 => errors.push(ValidationError {
            node: None,
            problem: Problem::NoStartNode,
        }),
        n => errors.extend(starts.iter().map(|&s| ValidationError {
            node: Some(node_ref(&graph[s])),
            problem: Problem::SeveralStartNodes(n),
        })),
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let start = starts[0];
    number_outputs(&mut graph);
    let mut warnings = warnings(&graph, start);
    warnings.extend(super::validate::cycles_without_wait(
        &graph,
        |n| matches!(n.kind, NodeKind::Question(_) | NodeKind::Flow(_)),
        node_ref,
    ));
    let keywords = |key: &str| metadata_keywords(doc.metadata.as_ref(), key);
    Ok((
        CompiledChatbot {
            name: doc.name.clone(),
            graph,
            by_id,
            start,
            trigger_keywords: keywords("triggerKeywords"),
            restart_keywords: keywords("restartKeywords"),
            handover_keywords: keywords("handoverKeywords"),
            handover_message: doc
                .metadata
                .as_ref()
                .and_then(|m| m.get("handoverMessage"))
                .and_then(Value::as_str)
                .filter(|m| !m.trim().is_empty())
                .map(str::to_owned),
            version: None,
        },
        warnings,
    ))
}

fn node_ref(node: &Node) -> NodeRef {
    NodeRef {
        id: node.id.clone(),
        label: node.label.clone(),
    }
}

/// Names each output-bearing node `{kind}_{N}` the way the editor does: Kahn's
/// topological order with the queue seeded by in-degree-0 nodes in `nodes` order,
/// neighbours in `edges` order, FIFO; nodes a cycle keeps Kahn from reaching come
/// after, in `nodes` order.
fn number_outputs(graph: &mut DiGraph<Node, Edge>) {
    let count = graph.node_count();
    let mut in_degree = vec![0usize; count];
    for edge in graph.edge_references() {
        in_degree[edge.target().index()] += 1;
    }
    let mut queue: VecDeque<NodeIndex> = graph
        .node_indices()
        .filter(|n| in_degree[n.index()] == 0)
        .collect();
    let mut order = Vec::with_capacity(count);
    let mut placed = vec![false; count];
    while let Some(n) = queue.pop_front() {
        order.push(n);
        placed[n.index()] = true;
        for edge in &graph[n].out {
            let degree = &mut in_degree[edge.target.index()];
            *degree -= 1;
            if *degree == 0 {
                queue.push_back(edge.target);
            }
        }
    }
    order.extend(graph.node_indices().filter(|n| !placed[n.index()]));
    let mut counters: HashMap<&'static str, usize> = HashMap::new();
    for n in order {
        if let Some(prefix) = graph[n].kind.variable_prefix() {
            let counter = counters.entry(prefix).or_default();
            *counter += 1;
            graph[n].var_name = Some(format!("{prefix}_{counter}"));
        }
    }
}

fn warnings(graph: &DiGraph<Node, Edge>, start: NodeIndex) -> Vec<Warning> {
    let mut reachable = vec![false; graph.node_count()];
    let mut dfs = Dfs::new(graph, start);
    while let Some(n) = dfs.next(graph) {
        reachable[n.index()] = true;
    }
    let mut warnings = Vec::new();
    for n in graph.node_indices() {
        let node = &graph[n];
        let node_ref = node_ref(node);
        if !reachable[n.index()] {
            warnings.push(Warning {
                node: node_ref.clone(),
                kind: WarningKind::Unreachable,
            });
        }
        let has_default = node.out.iter().any(OutEdge::is_default);
        let has_exhausted = node
            .out
            .iter()
            .any(|e| e.handle.as_deref() == Some("exhausted"));
        if let NodeKind::Question(q) = &node.kind {
            // Typed text at a choice question leaves by `default`; without one it is
            // asked again and then needs `exhausted`, else the conversation ends.
            let choices = q.question_type.has_choices();
            if choices && !has_default && !has_exhausted {
                warnings.push(Warning {
                    node: node_ref.clone(),
                    kind: WarningKind::NoPathForTypedText {
                        retries: q.max_retries(),
                    },
                });
            }
            // WhatsApp Web and Desktop cannot share a location: a customer there can
            // only fail a location question, so it needs another way on.
            if q.question_type == QuestionType::Location && !has_exhausted {
                warnings.push(Warning {
                    node: node_ref.clone(),
                    kind: WarningKind::LocationWithoutExhausted {
                        retries: q.max_retries(),
                    },
                });
            }
        }
        let Some(handles) = node.kind.handles() else {
            continue;
        };
        for edge in &node.out {
            if let Some(handle) = edge.handle.as_deref() {
                if handle != "default" && !handles.iter().any(|h| h == handle) {
                    warnings.push(Warning {
                        node: node_ref.clone(),
                        kind: WarningKind::UnknownHandle {
                            edge: edge.id.clone(),
                            handle: handle.to_owned(),
                        },
                    });
                }
            }
        }
        // A flow's `error` and a calendar node's `error` are optional exits.
        let optional = matches!(node.kind, NodeKind::Flow(_) | NodeKind::Calendar);
        // A choice without its own edge falls back to the default edge, a common
        // design (a list feeding a condition), so only choices with nowhere to go warn.
        let is_question = matches!(node.kind, NodeKind::Question(_));
        // Without validation, a choice question's `exhausted` is one of two ways to
        // give typed text a path; the warning above covers having neither.
        // A location question's missing `exhausted` has its own warning above.
        let exhausted_optional = matches!(&node.kind, NodeKind::Question(q)
            if q.validation.is_none() || q.question_type == QuestionType::Location);
        for handle in handles {
            if optional && handle == "error" {
                continue;
            }
            if exhausted_optional && handle == "exhausted" {
                continue;
            }
            let is_choice = is_question && handle != "exhausted" && handle != "timeout";
            if is_choice && has_default {
                continue;
            }
            if !node
                .out
                .iter()
                .any(|e| e.handle.as_deref() == Some(handle.as_str()))
            {
                warnings.push(Warning {
                    node: node_ref.clone(),
                    kind: WarningKind::UnusedHandle(handle),
                });
            }
        }
    }
    warnings
}

/// Keywords and messages compare trimmed and case-folded (Turkish İ/ı included).
fn fold(text: &str) -> String {
    super::vars::fold_case(text.trim())
}

/// The lower-cased keywords under `key` in a chatbot's `metadata` (an array of
/// strings or one comma-separated string).
pub fn metadata_keywords(metadata: Option<&Value>, key: &str) -> Vec<String> {
    let words: Vec<String> = match metadata.and_then(|m| m.get(key)) {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        Some(Value::String(s)) => s.split(',').map(str::to_owned).collect(),
        _ => Vec::new(),
    };
    words
        .into_iter()
        .map(|w| fold(&w))
        .filter(|w| !w.is_empty())
        .collect()
}

/// Whether `text` selects by one of `keywords`: it equals one, or starts with one
/// followed by a space.
pub fn matches_keyword(keywords: &[String], text: &str) -> bool {
    let text = fold(text);
    keywords.iter().any(|k| {
        text == *k
            || text
                .strip_prefix(k.as_str())
                .is_some_and(|rest| rest.starts_with(' '))
    })
}

/// The chatbot that answers a conversation without an active context, among the
/// active chatbots `(id, metadata)` oldest first (the store's order).
///
/// As in WhatsApp Builder, the oldest active chatbot answers. wabot adds optional
/// `metadata.triggerKeywords`: the oldest chatbot whose keyword the message starts
/// with answers; a chatbot with keywords answers only to them, so anything else goes
/// to the oldest chatbot without keywords.
pub fn choose_chatbot<'a, Id: Copy>(
    candidates: impl IntoIterator<Item = (Id, Option<&'a Value>)>,
    text: Option<&str>,
) -> Option<Id> {
    let keywords: Vec<(Id, Vec<String>)> = candidates
        .into_iter()
        .map(|(id, metadata)| (id, metadata_keywords(metadata, "triggerKeywords")))
        .collect();
    let triggered = text.and_then(|text| {
        keywords
            .iter()
            .find(|(_, words)| matches_keyword(words, text))
            .map(|(id, _)| *id)
    });
    triggered.or_else(|| {
        keywords
            .iter()
            .find(|(_, words)| words.is_empty())
            .map(|(id, _)| *id)
    })
}

impl CompiledChatbot {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The version it was compiled from, if named ([`CompiledChatbot::with_version`]).
    pub fn version(&self) -> Option<&str> {
        self.version.as_deref()
    }

    /// Names the version this chatbot was compiled from: contexts that start on it
    /// are pinned to it ([`super::Context::start`]).
    pub fn with_version(mut self, version: String) -> CompiledChatbot {
        self.version = Some(version);
        self
    }

    pub fn start(&self) -> NodeIndex {
        self.start
    }

    pub fn start_id(&self) -> &str {
        &self.graph[self.start].id
    }

    pub fn node(&self, index: NodeIndex) -> &Node {
        &self.graph[index]
    }

    pub fn find(&self, id: &str) -> Option<NodeIndex> {
        self.by_id.get(id).copied()
    }

    pub fn node_count(&self) -> usize {
        self.graph.node_count()
    }

    /// The nodes in document order.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.graph.node_indices().map(move |n| &self.graph[n])
    }

    pub fn graph(&self) -> &DiGraph<Node, Edge> {
        &self.graph
    }

    /// Lower-cased words that select this chatbot for a new conversation
    /// (`metadata.triggerKeywords`).
    pub fn trigger_keywords(&self) -> &[String] {
        &self.trigger_keywords
    }

    /// Lower-cased words that restart this chatbot (`metadata.restartKeywords`).
    pub fn restart_keywords(&self) -> &[String] {
        &self.restart_keywords
    }

    /// Lower-cased words with which a customer asks for a person
    /// (`metadata.handoverKeywords`).
    pub fn handover_keywords(&self) -> &[String] {
        &self.handover_keywords
    }

    /// What the bot says when a handover keyword ends its run
    /// (`metadata.handoverMessage`), if anything.
    pub fn handover_message(&self) -> Option<&str> {
        self.handover_message.as_deref()
    }

    /// The target of the first edge that leaves `from` by exactly `handle`.
    pub fn next_exact(&self, from: NodeIndex, handle: &str) -> Option<NodeIndex> {
        self.graph[from]
            .out
            .iter()
            .find(|e| e.handle.as_deref() == Some(handle))
            .map(|e| e.target)
    }

    /// The node reached from `from` by `handle`: the first edge with that handle,
    /// else the first default edge (no handle or `default`). Without a handle, the
    /// first default edge, else the first edge of all.
    pub fn next(&self, from: NodeIndex, handle: Option<&str>) -> Option<NodeIndex> {
        let out = &self.graph[from].out;
        if let Some(handle) = handle {
            if let Some(edge) = out.iter().find(|e| e.handle.as_deref() == Some(handle)) {
                return Some(edge.target);
            }
            return out.iter().find(|e| e.is_default()).map(|e| e.target);
        }
        out.iter()
            .find(|e| e.is_default())
            .or_else(|| out.first())
            .map(|e| e.target)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::choose_chatbot;

    #[test]
    fn the_oldest_triggered_chatbot_answers_else_the_oldest_without_keywords() {
        let orders = json!({"triggerKeywords": ["order", "Sipariş"]});
        let support = json!({"triggerKeywords": "help, destek"});
        let anything = json!({});
        let bots = [
            (1, Some(&orders)),
            (2, Some(&support)),
            (3, None),
            (4, Some(&anything)),
        ];
        let choose = |text| choose_chatbot(bots.iter().copied(), text);
        assert_eq!(choose(Some("order 42")), Some(1));
        assert_eq!(choose(Some("SİPARİŞ")), Some(1));
        assert_eq!(choose(Some("  destek  ")), Some(2));
        assert_eq!(
            choose(Some("orders")),
            Some(3),
            "a keyword must be a whole word"
        );
        assert_eq!(choose(Some("hello")), Some(3));
        assert_eq!(choose(None), Some(3));
        assert_eq!(
            choose_chatbot([(1, Some(&orders))], Some("hello")),
            None,
            "a chatbot with keywords answers only to them"
        );
    }
}

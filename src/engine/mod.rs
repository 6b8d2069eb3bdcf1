//! The chatbot engine: compiles WhatsApp Builder's ReactFlow graphs into petgraph
//! graphs and runs conversations turn by turn. Pure logic: no I/O, no clock.

pub mod outgoing;

pub use outgoing::{Choice, FlowAction, ListSection, Outgoing};

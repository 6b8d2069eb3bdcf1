//! Data sources and connections: external REST, Strapi and GraphQL APIs resolved
//! over HTTP into `{id, title, description}` items.

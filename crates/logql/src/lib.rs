//! LogQL lexer, parser, AST and log pipeline stages. Not implemented yet.

//! Integration tests of the ruler.

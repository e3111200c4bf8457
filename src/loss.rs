//! Loss terms (METHOD.md section 3), all in fp32.

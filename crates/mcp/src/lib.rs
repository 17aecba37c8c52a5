//! A Model Context Protocol proxy (work in progress: see issue 6).

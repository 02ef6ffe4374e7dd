use chrono::{DateTime, Utc};

use super::*;
use crate::call::tokens::TokenKind;

// Inline tables, as a table may also be written.
const TABLE: &str = r#"
[models]
"gpt-4o" = { input = "2.50", output = "10.00", cached_input = "1.25" }
"claude-3-5-haiku-*" = { input = "0.80", output = "4.00" }
"claude-*" = { input = "3", output = "15" }
"#;

fn usage(model: &str, input: u64, output: u64) -> TokenUsage<'static> {
    TokenUsage::tokens(input, output).with_model(model.to_owned())
}

#[test]
fn gpt_4o_thousand_in_thousand_out_is_exact() {
    let pricing = Pricing::from_toml(TABLE).unwrap();
    assert_eq!(
        pricing.cost_nano_usd(&usage("gpt-4o", 1000, 1000)),
        Some(12_500_000)
    );
}

#[test]
fn cached_tokens_use_their_price_and_are_capped_at_input() {
    let pricing = Pricing::from_toml(TABLE).unwrap();
    // 1000 input of which 400 cached: 600 × 2.50 + 400 × 1.25 = 1500 + 500 = 2000 µUSD.
    let cached = usage("gpt-4o", 1000, 0).with_cached_input_tokens(400);
    assert_eq!(pricing.cost_nano_usd(&cached), Some(2_000_000));
    let too_many = usage("gpt-4o", 10, 0).with_cached_input_tokens(400);
    assert_eq!(pricing.cost_nano_usd(&too_many), Some(12_500)); // 10 × 1.25
                                                                // No cached price: billed at input.
    let haiku = usage("claude-3-5-haiku-20241022", 1000, 0).with_cached_input_tokens(1000);
    assert_eq!(pricing.cost_nano_usd(&haiku), Some(800_000));
}

#[test]
fn the_longest_prefix_wins_and_exact_names_beat_prefixes() {
    let pricing = Pricing::from_toml(TABLE).unwrap();
    let haiku = pricing.price_of("claude-3-5-haiku-20241022").unwrap();
    assert_eq!(haiku.input, "0.80".parse().unwrap());
    let sonnet = pricing.price_of("claude-3-7-sonnet").unwrap();
    assert_eq!(sonnet.input, "3".parse().unwrap());
    assert!(pricing.price_of("gpt-4o-mini").is_none());
    assert!(pricing.price_of("gpt-4").is_none());
}

#[test]
fn rounding_is_once_and_half_up() {
    let price = ModelPrice::new("0.000000001", "0").unwrap(); // 10⁻¹⁵ USD per token
    let tokens = |n| TokenUsage::tokens(n, 0);
    assert_eq!(price.cost_nano_usd(&tokens(499_999)), Some(0));
    assert_eq!(price.cost_nano_usd(&tokens(500_000)), Some(1)); // exactly half: up
    assert_eq!(price.cost_nano_usd(&tokens(1_499_999)), Some(1));
    assert_eq!(price.cost_nano_usd(&tokens(1_500_000)), Some(2));
    // Rounded once over the sum, not per component: 0.6 + 0.6 nano = 1.2 → 1, not 2.
    let split = ModelPrice::new("0.0006", "0.0006").unwrap(); // 0.6 nano-USD per token each
    assert_eq!(split.cost_nano_usd(&TokenUsage::tokens(1, 1)), Some(1));
}

#[test]
fn the_largest_counts_do_not_overflow() {
    let price = ModelPrice::new("1000000", "1000000").unwrap();
    let cost = price.cost_nano_usd(&TokenUsage::tokens(u64::MAX, u64::MAX));
    assert_eq!(
        cost,
        Some(i64::MAX),
        "saturates at the largest storable cost"
    );
}

#[test]
fn prices_parse_exactly_or_not_at_all() {
    for (text, nanos) in [
        ("2.50", 2_500_000_000),
        ("0", 0),
        ("10", 10_000_000_000),
        (".5", 500_000_000),
        ("0.000000001", 1),
    ] {
        assert_eq!(
            text.parse::<Price>().unwrap().nano_usd_per_million(),
            nanos,
            "{text}"
        );
    }
    for bad in [
        "-1",
        "1e3",
        "",
        ".",
        "1.2.3",
        "abc",
        "0.0000000001",
        "1,5",
        "+2",
    ] {
        assert!(bad.parse::<Price>().is_err(), "{bad:?} parsed");
    }
    assert_eq!("2.50".parse::<Price>().unwrap().to_string(), "2.50");
    assert_eq!(
        "0.000000001".parse::<Price>().unwrap().to_string(),
        "0.000000001"
    );
}

#[test]
fn errors_name_the_file_model_and_field() {
    let err =
        Pricing::from_toml("[models.\"gpt-4o\"]\ninput = \"-2\"\noutput = \"1\"\n").unwrap_err();
    assert_eq!((err.model(), err.field()), (Some("gpt-4o"), Some("input")));
    assert!(
        err.to_string().contains("model `gpt-4o`, field `input`"),
        "{err}"
    );

    let err = Pricing::from_toml("[models.m]\ninput = 2.5\noutput = \"1\"\n").unwrap_err();
    assert!(err.to_string().contains("as strings"), "{err}");
    let err = Pricing::from_toml("[models.m]\ninput = \"1\"\n").unwrap_err();
    assert_eq!(err.field(), Some("output"));
    let err =
        Pricing::from_toml("[models.m]\ninput = \"1\"\noutput = \"1\"\nimput = \"1\"").unwrap_err();
    assert_eq!(err.field(), Some("imput"));
    let err = Pricing::from_toml("[models.\"a*b\"]\ninput = \"1\"\noutput = \"1\"").unwrap_err();
    assert_eq!(err.model(), Some("a*b"));
    assert!(Pricing::from_toml("[models").is_err());

    let dir = std::env::temp_dir().join(format!("pricing-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("prices.toml");
    std::fs::write(&path, "[models.x]\ninput = \"1\"\noutput = \"oops\"\n").unwrap();
    let err = Pricing::from_file(&path).unwrap_err();
    assert_eq!(err.file(), Some(path.as_path()));
    assert!(err.to_string().contains("prices.toml"), "{err}");
    assert!(Pricing::from_file(dir.join("missing.toml")).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A call's usage: `(input, output)` and the other counts by kind.
fn call(model: &str, input: u64, output: u64, kinds: &[(TokenKind, u64)]) -> TokenUsage<'static> {
    let mut usage = TokenUsage::tokens(input, output).with_model(model.to_owned());
    for &(kind, count) in kinds {
        usage = usage.with(kind, count);
    }
    usage
}

fn at(text: &str) -> DateTime<Utc> {
    text.parse().unwrap()
}

const LITELLM: &str =
    include_str!("../../../../tests/data/litellm/model_prices_and_context_window.json");

/// Each cost worked out by hand from the provider's published prices (USD per million tokens,
/// as LiteLLM's file has them): `tokens × price` is micro-USD, so nano-USD is that × 1000.
#[test]
fn costs_match_the_published_prices_for_every_token_kind() {
    use TokenKind::*;
    let pricing = Pricing::from_litellm_json(LITELLM).unwrap();
    let now = at("2026-01-01T00:00:00Z");
    let cases: &[(&str, TokenUsage<'static>, i64)] = &[
        // Claude Sonnet 4.5: $3 in, $15 out, $0.30 cache read, $3.75 5-minute write, $6 1-hour
        // write. 1,000 plain + 20,000 read + 3,000 5-minute + 2,000 1-hour = 26,000 input:
        // 3,000 + 6,000 + 11,250 + 12,000 + 7,500 (500 out) = 39,750 µUSD.
        (
            "sonnet: reads and both cache writes",
            call(
                "claude-sonnet-4-5",
                26_000,
                500,
                &[
                    (CachedInput, 20_000),
                    (CacheCreation, 5_000),
                    (CacheCreation1h, 2_000),
                ],
            ),
            39_750_000,
        ),
        // o3: $2 in, $0.50 cached, $8 out; reasoning is billed as output: 6,000 × 2 + 4,000 ×
        // 0.5 + 3,000 × 8 = 38,000 µUSD.
        (
            "o3: reasoning as output",
            call(
                "o3",
                10_000,
                3_000,
                &[(CachedInput, 4_000), (Reasoning, 2_500)],
            ),
            38_000_000,
        ),
        // Gemini 2.5 Flash: $0.30 in, $1.00 audio in, $2.50 out and reasoning: 600 × 0.3 + 400
        // × 1 + 2,000 × 2.5 = 5,580 µUSD.
        (
            "flash: audio input and reasoning",
            call(
                "gemini-2.5-flash",
                1_000,
                2_000,
                &[(AudioInput, 400), (Reasoning, 1_500)],
            ),
            5_580_000,
        ),
        // GPT-4o audio: $2.50 / $40 in, $10 / $80 out: 400 × 2.5 + 600 × 40 + 200 × 10 + 300
        // × 80 = 51,000 µUSD.
        (
            "gpt-4o audio: both audio kinds",
            call(
                "gpt-4o-audio-preview-2024-12-17",
                1_000,
                500,
                &[(AudioInput, 600), (AudioOutput, 300)],
            ),
            51_000_000,
        ),
        // Gemini 2.5 Pro, at the 200k threshold: the base rates ($1.25 in, $10 out):
        // 250,000 + 10,000 = 260,000 µUSD.
        (
            "pro: exactly at the threshold",
            call("gemini-2.5-pro", 200_000, 1_000, &[]),
            260_000_000,
        ),
        // One token above it: every token at the tier's rates ($2.50 in, $15 out):
        // 500,002.5 + 15,000 = 515,002.5 µUSD.
        (
            "pro: one above the threshold",
            call("gemini-2.5-pro", 200_001, 1_000, &[]),
            515_002_500,
        ),
        // Above it with cache reads at the tier's $0.25: 150,000 × 2.5 + 100,000 × 0.25 =
        // 400,000 µUSD.
        (
            "pro: cache reads in the tier",
            call("gemini-2.5-pro", 250_000, 0, &[(CachedInput, 100_000)]),
            400_000_000,
        ),
        // Sonnet 4.5 on Bedrock above 200k: 1-hour writes at the tier's $12, the rest at $6 in,
        // $22.50 out: 200,000 × 6 + 10,000 × 12 + 1,000 × 22.5 = 1,342,500 µUSD.
        (
            "sonnet tier: 1-hour writes at the tier's rate",
            call(
                "claude-sonnet-4-5-20250929-v1:0",
                210_000,
                1_000,
                &[(CacheCreation, 10_000), (CacheCreation1h, 10_000)],
            ),
            1_342_500_000,
        ),
    ];
    for (name, usage, nano) in cases {
        let cost = pricing
            .cost(usage, now)
            .unwrap_or_else(|| panic!("{name}: unpriced"));
        assert_eq!(cost.nano_usd, *nano, "{name}");
        assert!(
            cost.price_id.starts_with(usage.model.as_deref().unwrap()),
            "{name}"
        );
    }
    // No model, an unknown one, an image model (no token price), the sample entry: unpriced.
    for model in ["dall-e-9", "amazon.nova-canvas-v1:0", "sample_spec"] {
        assert_eq!(
            pricing.cost(&call(model, 10, 10, &[]), now),
            None,
            "{model}"
        );
    }
    assert_eq!(pricing.cost(&TokenUsage::tokens(10, 10), now), None);
}

#[test]
fn a_call_is_priced_by_the_entry_in_force_when_it_started() {
    let pricing = Pricing::from_toml(
        r#"
[[models."gpt-4o"]]
since = "2024-05-13"
input = "5.00"
output = "15.00"

[[models."gpt-4o"]]
since = "2024-10-01"
input = "2.50"
output = "10.00"
"#,
    )
    .unwrap();
    let usage = call("gpt-4o", 1_000, 1_000, &[]);
    let before = pricing
        .cost(&usage, at("2024-09-30T23:59:59.999999Z"))
        .unwrap();
    let after = pricing.cost(&usage, at("2024-10-01T00:00:00Z")).unwrap();
    assert_eq!(before.nano_usd, 20_000_000); // 1,000 × 5 + 1,000 × 15 µUSD
    assert_eq!(after.nano_usd, 12_500_000); // 1,000 × 2.5 + 1,000 × 10 µUSD
    assert!(
        before.price_id.starts_with("gpt-4o@2024-05-13#"),
        "{}",
        before.price_id
    );
    assert!(
        after.price_id.starts_with("gpt-4o@2024-10-01#"),
        "{}",
        after.price_id
    );
    // Before the first entry: unpriced, not $0.
    assert_eq!(pricing.cost(&usage, at("2024-05-12T23:59:59Z")), None);
    // The id changes with any rate, and stays with the same rates.
    let id_with = |output: &str| {
        let since = Some(at("2024-10-01T00:00:00Z"));
        let price = ModelPrice::new("2.50", output).unwrap();
        let pricing = Pricing::new()
            .model_since("gpt-4o", since, price, vec![])
            .unwrap();
        let cost = pricing.cost(&usage, at("2025-01-01T00:00:00Z")).unwrap();
        cost.price_id.to_owned()
    };
    assert_eq!(id_with("10"), after.price_id);
    assert_ne!(id_with("10.01"), after.price_id);
}

#[test]
fn toml_tiers_and_kinds_read_as_litellm_does() {
    let toml = Pricing::from_toml(
        r#"
[models."gemini-2.5-pro"]
input = "1.25"
output = "10"
cached_input = "0.125"
tiers = [{ above_input_tokens = 200000, input = "2.5", output = "15", cached_input = "0.25" }]
"#,
    )
    .unwrap();
    let json = Pricing::from_litellm_json(LITELLM).unwrap();
    let now = at("2026-01-01T00:00:00Z");
    for input in [1_000, 200_000, 200_001, 1_000_000] {
        let usage = call(
            "gemini-2.5-pro",
            input,
            777,
            &[(TokenKind::CachedInput, 500)],
        );
        assert_eq!(
            toml.cost(&usage, now).map(|c| c.nano_usd),
            json.cost(&usage, now).map(|c| c.nano_usd),
            "{input}"
        );
    }
}

#[test]
fn malformed_files_name_the_model_and_the_key() {
    for (toml, model, field) in [
        ("[models.m]\ninput = \"1\"\noutput = \"1\"\nreasonning = \"1\"", "m", "reasonning"),
        ("[[models.m]]\nsince = \"yesterday\"\ninput = \"1\"\noutput = \"1\"", "m", "since"),
        (
            "[models.m]\ninput = \"1\"\noutput = \"1\"\ntiers = [{ input = \"2\" }]",
            "m",
            "above_input_tokens",
        ),
        (
            "[models.m]\ninput = \"1\"\noutput = \"1\"\ntiers = [{ above_input_tokens = 5, output = \"x\" }]",
            "m",
            "output",
        ),
    ] {
        let err = Pricing::from_toml(toml).unwrap_err();
        assert_eq!((err.model(), err.field()), (Some(model), Some(field)), "{toml}: {err}");
    }
    let err = Pricing::from_toml(
        "[[models.m]]\ninput = \"1\"\noutput = \"1\"\n[[models.m]]\ninput = \"2\"\noutput = \"2\"",
    )
    .unwrap_err();
    assert!(err.to_string().contains("same time"), "{err}");
    let err = Pricing::from_toml("[models]\nm = []").unwrap_err();
    assert_eq!(err.model(), Some("m"), "{err}");
    let err = Pricing::from_toml(
        "[models.m]\ninput = \"1\"\noutput = \"1\"\n\
         tiers = [{ above_input_tokens = 5, input = \"2\" }, { above_input_tokens = 5, input = \"3\" }]",
    )
    .unwrap_err();
    assert!(err.to_string().contains("two tiers"), "{err}");
    for (json, field) in [
        (
            r#"{"m": {"input_cost_per_token": "2.5e-06", "output_cost_per_token": 1e-05}}"#,
            Some("input_cost_per_token"),
        ),
        (
            r#"{"m": {"input_cost_per_token": 2.5e-06, "output_cost_per_token": -1e-05}}"#,
            Some("output_cost_per_token"),
        ),
        (
            r#"{"m": {"input_cost_per_token": 1e-06, "output_cost_per_token": 1e-06, "input_cost_per_token_above_200k_tokens": null}}"#,
            Some("input_cost_per_token_above_200k_tokens"),
        ),
        (r#"{"m": 5}"#, None),
    ] {
        let err = Pricing::from_litellm_json(json).unwrap_err();
        assert_eq!(
            (err.model(), err.field()),
            (Some("m"), field),
            "{json}: {err}"
        );
    }
    assert!(Pricing::from_litellm_json("[1, 2]").is_err());
}

#[test]
fn the_real_litellm_file_loads_with_exact_prices() {
    let pricing = Pricing::from_litellm_json(LITELLM).unwrap();
    let sonnet = pricing.price_of("claude-sonnet-4-5").unwrap();
    let price = |text: &str| Some(text.parse::<Price>().unwrap());
    assert_eq!(sonnet.input, "3".parse().unwrap());
    assert_eq!(sonnet.cached_input, price("0.30"));
    assert_eq!(sonnet.cache_creation, price("3.75"));
    assert_eq!(sonnet.cache_creation_1h, price("6"));
    let mini = pricing.price_of("gpt-4o-mini").unwrap();
    assert_eq!(
        (mini.input, mini.cached_input),
        ("0.15".parse().unwrap(), price("0.075"))
    );
    let pro = pricing.entry_at("gemini-2.5-pro", Utc::now()).unwrap();
    assert_eq!(pro.tiers().len(), 1);
    assert_eq!(pro.tiers()[0].above_input_tokens, 200_000);
    assert_eq!(pro.tiers()[0].price.input, "2.5".parse().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("prices.json");
    std::fs::write(&path, LITELLM).unwrap();
    assert_eq!(
        Pricing::from_file(&path).unwrap(),
        pricing,
        "read by its extension"
    );
}

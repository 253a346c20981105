use super::*;

struct Map(Vec<(&'static str, &'static str)>, &'static str, i64);

impl TemplateData for Map {
    fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }
    fn line(&self) -> &str {
        self.1
    }
    fn timestamp_nanos(&self) -> i64 {
        self.2
    }
}

fn data() -> Map {
    Map(
        vec![
            ("level", "error"),
            ("method", "get"),
            ("status", "503"),
            ("msg", "  hello world  "),
            ("json", r#"{"a":{"b":"c"},"n":[1,2]}"#),
            ("empty", ""),
        ],
        "the line",
        1_700_000_000_123_000_000,
    )
}

fn render(src: &str) -> String {
    let t = Template::parse(src).unwrap_or_else(|e| panic!("{src}: {e}"));
    let mut out = String::new();
    t.execute(&data(), &mut out)
        .unwrap_or_else(|e| panic!("{src}: {e}"));
    out
}

fn parse_err(src: &str) -> String {
    Template::parse(src).unwrap_err().to_string()
}

#[test]
fn fields_text_and_pipelines() {
    assert_eq!(render("plain"), "plain");
    assert_eq!(render("L={{.level}}"), "L=error");
    assert_eq!(render("{{ .level | upper }}"), "ERROR");
    assert_eq!(render("{{ .missing }}|"), "|");
    assert_eq!(render("{{ .level | ToUpper | lower }}"), "error");
    assert_eq!(render("a  {{- .level -}}  b"), "aerrorb");
    assert_eq!(render("{{/* comment */}}x"), "x");
    assert_eq!(render("{{ (.level) }}"), "error");
    assert_eq!(
        render(r#"{{ "q" }}{{ `raw\n` }}{{ 3 }}{{ 1.5 }}{{ true }}"#),
        "qraw\\n31.5true"
    );
    assert_eq!(render("{{ __line__ }}"), "the line");
    assert_eq!(render("{{ (fromJson .json).a.b }}"), "c");
    assert_eq!(render(r#"{{ index (fromJson .json) "a" }}"#), "map[b:c]");
}

#[test]
fn conditionals_and_comparisons() {
    assert_eq!(
        render(r#"{{ if eq .level "error" }}E{{ else }}O{{ end }}"#),
        "E"
    );
    assert_eq!(
        render(r#"{{ if eq .level "x" }}1{{ else if eq .method "get" }}2{{ else }}3{{ end }}"#),
        "2"
    );
    assert_eq!(render(r#"{{ if and .level (not .empty) }}y{{ end }}"#), "y");
    assert_eq!(
        render(r#"{{ if or .empty .missing }}y{{ else }}n{{ end }}"#),
        "n"
    );
    assert_eq!(
        render(r#"{{ if gt (int .status) 500 }}big{{ end }}"#),
        "big"
    );
    assert_eq!(render(r#"{{ eq .level "a" "error" }}"#), "true");
    assert_eq!(render(r#"{{ lt "a" "b" }} {{ ge 2 2.5 }}"#), "true false");
    assert!(parse_err("{{ if .level }}x").contains("missing {{end}}"));
    assert!(parse_err("{{ end }}").contains("unexpected {{end}}"));
}

#[test]
fn parse_errors() {
    assert!(parse_err("{{ nosuchfunc }}").contains(r#"function "nosuchfunc" not defined"#));
    assert!(parse_err("{{").contains("unclosed action"));
    assert!(parse_err("{{ .a ").contains("unclosed action"));
    assert!(parse_err("{{ ( .a }}").contains("unclosed left paren"));
    assert!(parse_err("{{ range .a }}{{ end }}").contains("not supported"));
}

#[test]
fn string_functions() {
    assert_eq!(render("{{ .msg | TrimSpace | title }}"), "Hello World");
    assert_eq!(render("{{ trim .msg }}"), "hello world");
    assert_eq!(
        render(r#"{{ trunc 3 .level }}|{{ trunc -2 .level }}"#),
        "err|or"
    );
    assert_eq!(render(r#"{{ substr 1 3 .level }}"#), "rr");
    assert_eq!(render(r#"{{ replace "r" "R" .level }}"#), "eRRoR");
    assert_eq!(render(r#"{{ Replace .level "r" "R" 1 }}"#), "eRror");
    assert_eq!(
        render(r#"{{ trimPrefix "er" .level }} {{ TrimSuffix .level "or" }}"#),
        "ror err"
    );
    assert_eq!(
        render(
            r#"{{ Trim "xxaxx" "x" }} {{ TrimLeft "xxa" "x" }} {{ TrimRight "axx" "x" }} {{ trimAll "x" "xax" }}"#
        ),
        "a a a a"
    );
    assert_eq!(
        render(r#"{{ regexReplaceAll "(\\w)r" .level "${1}R" }}"#),
        "eRroR"
    );
    assert_eq!(
        render(r#"{{ regexReplaceAllLiteral "r" .level "$1" }}"#),
        "e$1$1o$1"
    );
    assert_eq!(render(r#"{{ count "r" .level }}"#), "3");
    assert_eq!(
        render(
            r#"{{ contains "rr" .level }} {{ hasPrefix "e" .level }} {{ hasSuffix "x" .level }}"#
        ),
        "true true false"
    );
    assert_eq!(render(r#"{{ repeat 2 "ab" }}"#), "abab");
    assert_eq!(
        render(r#"{{ indent 2 "a\nb" }}|{{ nindent 1 "a" }}"#),
        "  a\n  b|\n a"
    );
    assert_eq!(
        render(r#"{{ .empty | default "none" }} {{ .level | default "none" }}"#),
        "none error"
    );
    assert_eq!(
        render(r#"{{ urlencode "a b&c" }} {{ urldecode "a+b%26c" }}"#),
        "a+b%26c a b&c"
    );
    assert_eq!(
        render(r#"{{ b64enc "hi" }} {{ b64dec "aGk=" }}"#),
        "aGk= hi"
    );
    assert_eq!(
        render(r#"[{{ alignLeft 5 "ab" }}][{{ alignRight 5 "ab" }}][{{ alignLeft 1 "ab" }}]"#),
        "[ab   ][   ab][a]"
    );
}

#[test]
fn math_functions() {
    assert_eq!(
        render(r#"{{ add 1 2 3 }} {{ sub 5 .status }} {{ mul 2 3 }} {{ div 7 2 }} {{ mod 7 2 }}"#),
        "6 -498 6 3 1"
    );
    assert_eq!(
        render(r#"{{ addf 1.5 2 }} {{ subf 5 0.5 }} {{ mulf 1.5 2 }} {{ divf 1 4 }}"#),
        "3.5 4.5 3 0.25"
    );
    assert_eq!(
        render(r#"{{ max 1 5 3 }} {{ min 4 2 }} {{ maxf 1.5 2 }} {{ minf 1.5 2 }}"#),
        "5 2 2 1.5"
    );
    assert_eq!(
        render(r#"{{ ceil 1.2 }} {{ floor 1.8 }} {{ round 1.2345 2 }} {{ round 2.5 0 }}"#),
        "2 1 1.23 3"
    );
    assert_eq!(
        render(r#"{{ int "42" }} {{ float64 "1.5" }} {{ int 3.9 }}"#),
        "42 1.5 3"
    );
    let t = Template::parse("{{ div 1 0 }}").unwrap();
    assert!(t.execute(&data(), &mut String::new()).is_err());
}

#[test]
fn printf_verbs() {
    assert_eq!(render(r#"{{ printf "%s=%d" .level 5 }}"#), "error=5");
    assert_eq!(
        render(
            r#"{{ printf "%5s|%-5s|%05d|%.2f|%q|%v|%t|%x|%%" "a" "b" 42 3.14159 "q" 1.5 true 255 }}"#
        ),
        "    a|b    |00042|3.14|\"q\"|1.5|true|ff|%"
    );
    assert_eq!(
        render(r#"{{ printf "\x1b[31m%s\x1b[0m" .level }}"#),
        "\x1b[31merror\x1b[0m"
    );
    assert_eq!(render(r#"{{ printf "%s" }}"#), "%!s(MISSING)");
    assert_eq!(render(r#"{{ .level | printf "<%s>" }}"#), "<error>");
}

#[test]
fn time_functions() {
    assert_eq!(render("{{ __timestamp__ | unixEpoch }}"), "1700000000");
    assert_eq!(
        render("{{ unixEpochMillis __timestamp__ }}"),
        "1700000000123"
    );
    assert_eq!(
        render("{{ unixEpochNanos __timestamp__ }}"),
        "1700000000123000000"
    );
    assert_eq!(
        render(r#"{{ date "2006-01-02 15:04:05" __timestamp__ }}"#),
        "2023-11-14 22:13:20"
    );
    assert_eq!(
        render(r#"{{ __timestamp__ | date "Jan 2 2006 .000" }}"#),
        "Nov 14 2023 .123"
    );
    assert_eq!(
        render(r#"{{ toDateInZone "2006-01-02" "UTC" "2024-02-03" | unixEpoch }}"#),
        "1706918400"
    );
    assert_eq!(
        render(r#"{{ unixToTime "1700000000" | unixEpoch }}"#),
        "1700000000"
    );
    assert_eq!(
        render("{{ __timestamp__ }}"),
        "2023-11-14 22:13:20.123 +0000 UTC"
    );
}

#[test]
fn go_float_format() {
    assert_eq!(format_go_float(1.5), "1.5");
    assert_eq!(format_go_float(100.0), "100");
    assert_eq!(format_go_float(1e21), "1e+21");
    assert_eq!(format_go_float(1e-5), "1e-05");
    assert_eq!(format_go_float(0.0001), "0.0001");
}

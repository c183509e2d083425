use super::yaml::*;
use super::*;

fn zones() -> Vec<String> {
    vec!["global".to_string()]
}

#[test]
fn host_rules_follow_istio() {
    assert!(validate_host("httpbin.bar.global").is_ok());
    assert!(validate_host("*.bar.global").is_ok());
    assert!(validate_host("*").is_err());
    assert!(validate_host("a.*.global").is_err());
    assert!(validate_host("-a.global").is_err());
    assert!(validate_host("a_b.global").is_err());
    assert!(validate_host("a..global").is_err());
}

#[test]
fn addresses_keep_only_host_routes() {
    assert_eq!(
        parse_host_address("10.1.2.3/32").unwrap(),
        Some("10.1.2.3".parse().unwrap())
    );
    assert_eq!(
        parse_host_address("fd00::1/128").unwrap(),
        Some("fd00::1".parse().unwrap())
    );
    assert_eq!(parse_host_address("10.1.0.0/16").unwrap(), None);
    assert!(parse_host_address("nope").is_err());
}

#[test]
fn list_and_multi_document_and_bad_objects() {
    let text = r#"
apiVersion: v1
kind: List
items:
- apiVersion: networking.istio.io/v1
  kind: ServiceEntry
  metadata: {name: a, namespace: n}
  spec: {hosts: [A.N.Global.]}
---
apiVersion: networking.istio.io/v1alpha3
kind: ServiceEntry
metadata: {name: b}
spec: {hosts: "not-a-list"}
---
kind: ConfigMap
metadata: {name: c}
"#;
    let objs = parse_yaml(text, "f.yaml").unwrap();
    assert_eq!(objs.len(), 2);
    let a = objs[0].as_ref().unwrap();
    let (entry, problems) = a.validate("local", "f.yaml", &zones());
    assert!(problems.is_empty());
    assert_eq!(entry.unwrap().hosts, vec!["a.n.global"]);
    let err = objs[1].as_ref().unwrap_err();
    assert!(err.object.contains("ServiceEntry b"), "{err}");
}

#[test]
fn syntax_error_fails_the_file() {
    assert!(parse_yaml("kind: [unclosed", "x.yaml").is_err());
}

const SE_A: &str = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n";

fn names(objs: &[Result<ServiceEntry, Problem>]) -> Vec<String> {
    objs.iter()
        .map(|o| match o {
            Ok(se) => se.metadata.name.clone(),
            Err(p) => format!("problem: {p}"),
        })
        .collect()
}

#[test]
fn yaml_1_2_booleans_on_both_parsers() {
    let block = format!(
        "{SE_A}metadata:\n  name: no\n  namespace: n\n  labels:\n    a: off\n    b: yes\nspec:\n  hosts: [x.n.global]\n  location: on\n"
    );
    // The same document through the bounded parser (an anchor sends it there).
    let anchored = block.replace("metadata:", "metadata: &m");
    assert!(fits_libyaml(&block) && !fits_libyaml(&anchored));
    for text in [&block, &anchored] {
        let objs = parse_yaml(text, "f.yaml").unwrap();
        let se = objs[0].as_ref().unwrap();
        assert_eq!(se.metadata.name, "no");
        assert_eq!(se.metadata.namespace.as_deref(), Some("n"));
        assert_eq!(se.metadata.labels["a"], "off");
        assert_eq!(se.metadata.labels["b"], "yes");
        assert_eq!(se.spec.location.as_deref(), Some("on"));
    }
}

#[test]
fn empty_documents_and_files() {
    assert!(parse_yaml("", "f.yaml").unwrap().is_empty());
    assert!(parse_yaml("# only a comment\n", "f.yaml")
        .unwrap()
        .is_empty());
    let text = format!("---\n---\n{SE_A}metadata: {{name: a}}\n---\n...\n---\n# c\n");
    assert_eq!(names(&parse_yaml(&text, "f.yaml").unwrap()), ["a"]);
}

#[test]
fn quoted_port_numbers_are_numbers() {
    let text = format!(
        "{SE_A}metadata: {{name: a}}\nspec:\n  hosts: [a.global]\n  ports:\n  - number: \"8080\"\n    name: http\n    targetPort: '017'\n  - number: 0x50\n    name: x\n"
    );
    for text in [text.clone(), text.replace("name: a", "name: &a a")] {
        let objs = parse_yaml(&text, "f.yaml").unwrap();
        let ports = &objs[0].as_ref().unwrap().spec.ports;
        assert_eq!((ports[0].number, ports[0].target_port), (8080, Some(17)));
        assert_eq!(ports[1].number, 80);
    }
    let bad = format!("{SE_A}metadata: {{name: a}}\nspec:\n  ports:\n  - number: http\n");
    assert!(parse_yaml(&bad, "f.yaml").unwrap()[0].is_err());
}

#[test]
fn byte_order_mark_is_skipped() {
    let text = format!("\u{feff}{SE_A}metadata: {{name: a}}\nspec: {{hosts: [a.global]}}\n");
    assert_eq!(names(&parse_yaml(&text, "f.yaml").unwrap()), ["a"]);
}

#[test]
fn late_syntax_error_fails_the_whole_file() {
    let text = format!("{SE_A}metadata: {{name: a}}\n---\n{SE_A}metadata: {{name: b\n");
    let err = parse_yaml(&text, "dir/f.yaml").unwrap_err();
    assert!(err.starts_with("dir/f.yaml: YAML error"), "{err}");
}

#[test]
fn repeated_keys_fail_the_file() {
    for text in [
        format!("{SE_A}metadata: {{name: a}}\nmetadata: {{name: b}}\n"),
        format!("{SE_A}metadata:\n  name: a\n  labels:\n    x: '1'\n    x: '2'\n"),
        "kind: List\nitems:\n- kind: ServiceEntry\n  kind: ServiceEntry\n".to_string(),
    ] {
        assert!(fits_libyaml(&text));
        assert!(parse_yaml(&text, "f.yaml").is_err(), "{text}");
    }
}

#[test]
fn anchors_and_merge_keys_take_the_bounded_parser() {
    let text = "kind: List\nitems:\n\
        - {kind: ServiceEntry, metadata: &m {name: a}, spec: {hosts: [a.global]}}\n\
        - kind: ServiceEntry\n  metadata:\n    <<: *m\n    namespace: x\n";
    let objs = parse_yaml(text, "f.yaml").unwrap();
    assert_eq!(names(&objs), ["a", "a"]);
    assert_eq!(
        objs[1].as_ref().unwrap().metadata.namespace.as_deref(),
        Some("x")
    );
}

#[test]
fn which_files_libyaml_gets() {
    let se = |i: usize| {
        format!("{SE_A}metadata: {{name: a{i}, labels: {{\"x\": \"y\"}}}}\nspec: {{hosts: [a.global]}}\n")
    };
    // Many documents, each with a few brackets (quoted scalars inside them or not).
    let docs: Vec<String> = (0..1000).map(se).collect();
    assert!(fits_libyaml(&docs.join("---\n")));
    // One large document: its brackets counted, which quotes inside them make unreliable.
    let list = |q: &str| {
        let items: String = (0..300)
            .map(|i| format!("- {{kind: ServiceEntry, metadata: {{name: {q}a{i}{q}}}}}\n"))
            .collect();
        format!("kind: List\nitems:\n{items}")
    };
    assert!(fits_libyaml(&list("")));
    assert!(!fits_libyaml(&list("'")));
    // Anchors and merge keys; deep nesting, spread over documents or hidden behind quotes.
    assert!(!fits_libyaml("a: &x 1\n"));
    assert!(!fits_libyaml("a: {<<: {b: 1}}\n"));
    assert!(!fits_libyaml(&"[".repeat(300)));
    assert!(!fits_libyaml(&"[\"]\", ".repeat(300)));
    assert!(!fits_libyaml(&"{a: # }\n".repeat(300)));
    assert!(fits_libyaml(&"[[[]]]\n---\n".repeat(300)));
    // A `---` that is no marker does not reset the count.
    assert!(!fits_libyaml(&format!(
        "{}\n---x\n{}",
        "[".repeat(200),
        "[".repeat(200)
    )));
}

#[test]
fn hostile_input_is_refused_quickly() {
    let laughs =
        "a: &a [lol,lol,lol,lol,lol,lol,lol,lol,lol]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n\
        c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n\
        e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n\
        g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\nh: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]\n";
    let n = 200_000;
    let texts = [
        laughs.to_string(),
        format!("{}{}", "[".repeat(n), "]".repeat(n)),
        format!("{}1{}", "{a: ".repeat(n), "}".repeat(n)),
        "[".repeat(n),
        // Block nesting past the deserialiser's limit (128), without a bracket.
        (0..200)
            .map(|i| format!("{}- \n", "  ".repeat(i)))
            .collect(),
        format!("{SE_A}metadata: *nothing\n"),
    ];
    let start = std::time::Instant::now();
    for text in &texts {
        assert!(
            parse_yaml(text, "h.yaml").is_err(),
            "{}",
            &text[..60.min(text.len())]
        );
    }
    assert!(start.elapsed() < std::time::Duration::from_secs(10));
}

#[test]
fn invalid_host_is_skipped_and_named() {
    let se: ServiceEntry = serde_json::from_value(serde_json::json!({
        "apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
        "metadata": {"name": "x", "namespace": "ns",
                     "labels": {AUTOALLOCATE_LABEL: "false"}},
        "spec": {"hosts": ["*", "ok.ns.global", "outside.example.com"],
                 "ports": [{"number": 80, "name": "HTTP", "protocol": "HTTP"},
                           {"number": 53, "name": "dns", "protocol": "UDP"}],
                 "resolution": "DNS"}
    }))
    .unwrap();
    let (entry, problems) = se.validate("c1", "f.yaml", &zones());
    let entry = entry.unwrap();
    assert_eq!(entry.hosts, vec!["ok.ns.global"]);
    assert!(!entry.autoallocate);
    assert_eq!(entry.ports[0].name, "http");
    assert_eq!(entry.ports[1].transport, Transport::Udp);
    assert_eq!(problems.len(), 1);
    assert!(problems[0].to_string().contains("ServiceEntry ns/x"));
}

#[test]
fn control_characters_fail_the_file_on_either_parser() {
    let se = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: a, namespace: b}\nspec: {hosts: [a.b.global]}\n";
    // With an anchor the file goes to the bounded parser, which took a NUL for the end.
    for text in [
        format!("\0{se}x: &a 1\n"),
        format!("{se}---\nx: &a 1\n\0junk\n"),
        format!("{se}\x01"),
        format!("{se}x: \"\x7f\"\n"),
    ] {
        let err = parse_yaml(&text, "f.yaml").unwrap_err();
        assert!(err.contains("control character"), "{err}");
    }
    assert_eq!(
        parse_yaml(&format!("{se}#\ttab\r\n"), "f.yaml")
            .unwrap()
            .len(),
        1
    );
}

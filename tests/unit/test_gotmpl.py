"""lima.gotmpl: the subset of Go's text/template used by lima.yaml fields.

Expected outputs are what Go's text/template prints for the same template and map data.
"""

from __future__ import annotations

from typing import Any

import pytest

from lima import gotmpl

DATA: dict[str, Any] = {
    "User": "bob",
    "UID": 501,
    "HostOS": "linux",
    "Empty": "",
    "Zero": 0,
    "Items": [1, 2],
    "Param": {"url": "", "token": "tok", "flag": "on"},
}


def run(text: str) -> str:
    return gotmpl.execute(text, DATA)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # plain fields, literals, trimming, comments
        ("{{.User}}:{{.UID}}", "bob:501"),
        ("a {{- .User -}} b", "abobb"),
        ("{{- /* note */ -}} x", "x"),
        ('{{"{{"}}.User}}', "{{.User}}"),
        ("{{`raw\\n`}}", "raw\\n"),
        ("{{true}} {{false}} {{42}} {{-7}} {{0x10}}", "true false 42 -7 16"),
        ("{{1.5}} {{1000.0}} {{1e21}} {{0.00001}}", "1.5 1000 1e+21 1e-05"),
        # missing keys: <no value>, also through a chain (Go returns the invalid value)
        ("{{.Nope}} {{.Param.nope}} {{.Param.a.b}}", "<no value> <no value> <no value>"),
        # $ is the data, whatever dot is
        ("{{$.User}} {{with .Param}}{{.flag}}{{$.UID}}{{end}}", "bob on501"),
    ],
)
def test_fields_and_literals(text: str, expected: str) -> None:
    assert run(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{{if .User}}yes{{end}}", "yes"),
        ("{{if .Empty}}yes{{end}}", ""),
        ("{{if .Zero}}yes{{else}}no{{end}}", "no"),
        ("{{if .Nope}}yes{{else}}no{{end}}", "no"),
        ("{{if .Items}}list{{end}}", "list"),
        ("{{if .Empty}}a{{else if .Zero}}b{{else if .User}}c{{else}}d{{end}}", "c"),
        ("{{if .Empty}}a{{else if .Zero}}b{{else}}d{{end}}", "d"),
        ("{{if .User}}{{if .Empty}}x{{else}}inner{{end}}{{end}}", "inner"),
        ("{{with .Param.flag}}[{{.}}]{{else}}none{{end}}", "[on]"),
        ("{{with .Empty}}[{{.}}]{{else}}none{{end}}", "none"),
        ("{{if .Empty}}a{{else with .User}}{{.}}!{{end}}", "bob!"),
        # trimming around block actions, as k8s.yaml's message uses it
        ("x\n  {{- if .User}}\n  body\n  {{end -}}\n  y", "x\n  body\n  y"),
    ],
)
def test_if_else_with(text: str, expected: str) -> None:
    assert run(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # and/or return the deciding operand, as Go 1.18+ does
        ("{{and .User .UID}}", "501"),
        ("{{and .Empty .UID}}", ""),
        ("{{or .Empty .User}}", "bob"),
        ("{{or .Empty .Zero}}", "0"),
        ("{{or .Nope \"dflt\"}}", "dflt"),
        ("{{not .Empty}} {{not .User}} {{not .Nope}}", "true false true"),
        ("{{if not ( and .Param.url .Param.token )}}init{{else}}join{{end}}", "init"),
        ('{{if and .Param.flag (eq .Param.flag "on")}}on{{end}}', "on"),
        ('{{eq .HostOS "linux"}} {{eq .HostOS "darwin" "linux"}} {{eq .UID 501}}',
         "true true true"),
        ('{{ne .HostOS "linux"}} {{ne .UID 1}}', "false true"),
        ('{{eq .Nope "x"}} {{eq .Nope .Nope2}}', "false true"),
        ('podman{{if eq .HostOS "linux"}} --remote{{end}} run', "podman --remote run"),
        ("{{lt 1 2}} {{le 2 2}} {{gt 1 2}} {{ge 2.5 1.5}} {{lt \"a\" \"b\"}}",
         "true true false true true"),
        ("{{len .Items}} {{len .User}} {{len \"h\u00e9\"}}", "2 3 3"),
        ('{{print 1 2 "a" 3}}|{{println .User 1}}', "1 2a3|bob 1\n"),
    ],
)
def test_functions(text: str, expected: str) -> None:
    assert run(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{{.User | print}}", "bob"),
        ('{{.User | print "x" 1}}', "x1bob"),
        ('{{.HostOS | eq "linux"}}', "true"),
        ("{{.Empty | not}}", "true"),
        ('{{"a" | print "b" | print "c"}}', "cba"),
        ("{{if .User | len | lt 2}}long{{end}}", "long"),
    ],
)
def test_pipes(text: str, expected: str) -> None:
    assert run(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "{{ .User",  # unclosed action
        "{{end}}",
        "{{else}}",
        "{{if .User}}never closed",
        "{{if}}{{end}}",
        "{{if .User}}a{{else}}b{{else}}c{{end}}",
        "{{if .User}}a{{end extra}}",
        "{{range .Items}}{{.}}{{end}}",  # not implemented
        "{{$x := 1}}{{$x}}",  # variables not implemented
        '{{printf "%s" .User}}',  # not implemented
        "{{nosuchfunc .User}}",
        "{{.User.Name}}",  # field of a string
        "{{.User 1}}",  # argument to a non-function
        "{{nil}}",
        "{{.}}",  # printing a map is not supported
        '{{eq 1 "a"}}',  # incompatible types
        "{{lt true false}}",
        "{{not 1 2}}",
        "{{.User |}}",
        "{{| .User}}",
        "{{(.User}}",
    ],
)
def test_errors(text: str) -> None:
    with pytest.raises(gotmpl.TemplateError):
        run(text)


def test_a_parse_error_in_an_untaken_branch_still_fails() -> None:
    # Go parses the whole template before executing any of it.
    with pytest.raises(gotmpl.TemplateError):
        run("{{if .Empty}}{{nosuchfunc}}{{end}}ok")


def test_k8s_like_script_expands() -> None:
    script = (
        "#!/bin/bash\n{{if not ( and .Param.url .Param.token )}}\nkubeadm init\n{{else}}\n"
        'kubeadm join "{{.Param.url}}" --token "{{.Param.token}}"\n{{end}}\n'
    )
    assert run(script) == "#!/bin/bash\n\nkubeadm init\n\n"
    joined = gotmpl.execute(script, {**DATA, "Param": {"url": "h:6443", "token": "t"}})
    assert joined == '#!/bin/bash\n\nkubeadm join "h:6443" --token "t"\n\n'


def test_text_without_actions_is_returned_unchanged() -> None:
    assert run("no actions here }}") == "no actions here }}"


def test_the_parser_knows_every_function_the_runner_has() -> None:
    from lima.gotmpl import parse, run
    assert set(run._FUNCS) == parse.BUILTINS | run.LIMA_FUNCS
    assert not parse.BUILTINS & run.LIMA_FUNCS


def test_struct_fields_and_limas_list_functions() -> None:
    from lima.gotmpl import Struct, TemplateError, execute, run

    data = Struct({"Name": "vm", "Param": {}}, "store.FormatData", {"name": "vm"})
    assert execute("{{.Name}} {{.Param.X}} {{json .}}", data, run.LIMA_FUNCS) == (
        'vm <no value> {"name":"vm"}')
    with pytest.raises(TemplateError, match=r"can't evaluate field Nope in type store\.FormatData"):
        execute("{{.Nope}}", data)
    # lima.yaml's templates get Go's builtins only, as Lima's textutil.ExecuteTemplate
    with pytest.raises(TemplateError, match='function "json" not defined'):
        execute("{{json .}}", {"a": 1})
    with pytest.raises(TemplateError, match='function "json" not defined'):
        execute("{{if (eq (json .) 1)}}x{{end}}", {"a": 1})

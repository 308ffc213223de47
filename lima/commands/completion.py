"""`limactl completion bash|zsh|fish|powershell` and the hidden `limactl __complete`.

Called by `lima.cli` (lazily). `completion SHELL` prints a small script for that shell;
the script asks `limactl __complete SHELL -- WORDS...` for the candidates of the word under
the cursor (cobra's design, which Lima's scripts use too). `__complete` walks the words with
click's own parser (`_resolve_context`), so verbs, flags and flag choices come from the
commands themselves; arguments are completed by their role: instance names, disk names
(`limactl disk ...`), and `template:NAME` locators (Lima skips `_private` snippets), with
the shell's file completion where a file may be meant.

The answer is one line with a directive (`default`: the shell may complete file names when
nothing else matches; `nofile`: it must not) followed by one candidate per line.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import click

from lima.errors import LimaError

# Argument names (click's `name`) and what they hold.
_INSTANCE_ARGS = {"name", "names", "instance", "instances"}
_LOCATOR_ARGS = {"locator", "files", "file", "template", "templates", "source"}
_BOTH_ARGS = {"target"}  # `start TARGET`: an instance, a file or a template

# What bash splits words at (the default COMP_WORDBREAKS that can occur in our values).
_BASH_BREAKS = ":="

_BASH = """\
# bash completion for limactl                                  -*- shell-script -*-
# Load it in this shell:      source <(limactl completion bash)
# Load it in every new shell: limactl completion bash > /etc/bash_completion.d/limactl
_limactl_completion() {
    local -a lines
    mapfile -t lines < <("${COMP_WORDS[0]}" __complete bash -- \\
        "${COMP_LINE:0:COMP_POINT}" 2>/dev/null)
    [[ ${#lines[@]} -gt 0 ]] || return 0
    COMPREPLY=("${lines[@]:1}")
    if [[ ${#COMPREPLY[@]} -eq 0 && ${lines[0]} == default ]]; then
        compopt -o default
    fi
}
complete -o nosort -F _limactl_completion limactl
"""

_ZSH = """\
#compdef limactl
# zsh completion for limactl.
# Load it in this shell (after compinit): source <(limactl completion zsh)
# Load it in every new shell: limactl completion zsh > "${fpath[1]}/_limactl"
_limactl() {
    local -a lines
    lines=("${(@f)$(${words[1]} __complete __FLAGS__zsh -- "${(@)words[2,CURRENT]}" \\
        2>/dev/null)}")
    local directive=${lines[1]}
    lines=("${(@)lines[2,-1]}")
    lines=(${lines:#})
    if (( ${#lines} )); then
        _describe -t values limactl lines
    elif [[ $directive == default ]]; then
        _files
    fi
}
if [[ "${funcstack[1]}" == _limactl ]]; then
    _limactl "$@"
else
    compdef _limactl limactl
fi
"""

_FISH = """\
# fish completion for limactl.
# Load it in this shell:      limactl completion fish | source
# Load it in every new shell: limactl completion fish > ~/.config/fish/completions/limactl.fish
function __limactl_complete
    set -l tokens (commandline -opc)
    set -l exe $tokens[1]
    set -e tokens[1]
    set -l current (commandline -ct)
    set -l lines ($exe __complete __FLAGS__fish -- $tokens "$current" 2>/dev/null)
    if test (count $lines) -gt 1
        printf '%s\\n' $lines[2..-1]
    else if test "$lines[1]" = default
        __fish_complete_path "$current"
    end
end
complete -c limactl -f -a '(__limactl_complete)'
"""

_SCRIPTS = {"bash": _BASH, "zsh": _ZSH, "fish": _FISH}


def script(shell: str, descriptions: bool = True) -> str:
    """The completion script for `shell` (pure)."""
    if shell not in _SCRIPTS:
        raise LimaError(f"completion for {shell} is not supported by limapy (bash, zsh and "
                        "fish are)")
    flags = "" if descriptions else "--no-descriptions "
    return _SCRIPTS[shell].replace("__FLAGS__", flags)


# --------------------------------------------------------------------------------------
# candidates


def _split_line(line: str) -> list[str]:
    """bash's COMP_LINE up to the cursor as words; the last one is the word being typed
    (empty after a space). An unclosed quote is closed, as the user will close it."""
    for closing in ("", '"', "'"):
        try:
            words = shlex.split(line + closing)
        except ValueError:
            continue
        if not line or line[-1].isspace():
            words.append("")
        return words
    return line.split() + ([""] if not line or line[-1].isspace() else [])


def _unquote(word: str) -> str:
    try:
        parts = shlex.split(word)
    except ValueError:
        parts = shlex.split(word + word[0]) if word and word[0] in "\"'" else [word]
    return parts[0] if len(parts) == 1 else word


def _template_dirs() -> list[Path]:
    """lima.schemas.templates.template_dirs(), without importing the spec layer (~0.1 s
    paid on every TAB); a test keeps the two equal."""
    from lima import paths

    dirs = [Path(p) for p in os.environ.get("LIMA_TEMPLATES_PATH", "").split(":") if p]
    return [*dirs, paths.templates_dir(), paths.builtin_templates_dir()]


def template_names(incomplete: str) -> list[str]:
    """`template:NAME` for every template visible to `template:` (first in search order
    wins), as Lima completes them: private snippets (`dir/_x`) only once typed."""
    names: set[str] = set()
    for directory in _template_dirs():
        if directory.is_dir():
            names.update(f.relative_to(directory).with_suffix("").as_posix()
                         for f in directory.rglob("*.yaml"))
    out = []
    for name in sorted("template:" + n for n in names):
        if not name.startswith(incomplete):
            continue
        if (len(name) > len(incomplete) and incomplete.endswith("/")
                and name[len(incomplete)] == "_"):
            continue
        out.append(name)
    return out


def _instances(incomplete: str) -> list[str]:
    from lima.drivers.store import instance_names

    return [n for n in instance_names() if n.startswith(incomplete)]


def _disks(incomplete: str) -> list[str]:
    from lima.drivers.disks import disk_names

    return [n for n in disk_names() if n.startswith(incomplete)]


def candidates(words: list[str]) -> tuple[str, list[tuple[str, str]]]:
    """(directive, [(value, description)]) for the last of `words` (the arguments after
    `limactl`, the last one being completed)."""
    from click.shell_completion import _resolve_context, _resolve_incomplete

    from lima.cliapp import limactl

    args, incomplete = words[:-1], words[-1] if words else ""
    try:
        ctx = _resolve_context(limactl, {}, "limactl", list(args))
        obj, incomplete = _resolve_incomplete(ctx, list(args), incomplete)
    except (click.ClickException, click.exceptions.Exit, LimaError):
        return "default", []
    if obj is limactl and not incomplete.startswith("-"):
        # The verbs from the table, as `limactl --help` lists them: no verb is imported.
        from lima.cli import SHORT_HELP

        verbs = limactl.list_commands(ctx)
        return "nofile", [(v, SHORT_HELP.get(v, "")) for v in verbs if v.startswith(incomplete)]
    if ctx.command.name == "shell" and ctx.parent is not None:
        return _shell(words[words.index("shell") + 1:-1], incomplete)
    if isinstance(obj, click.Argument) and not incomplete.startswith("-"):
        return _argument(ctx, obj, incomplete)
    items = obj.shell_complete(ctx, incomplete)
    if any(item.type in ("file", "dir") for item in items):
        return "default", []
    if isinstance(obj, click.Option) and not items:
        return "default", []
    return "nofile", [(str(i.value), i.help or "") for i in items]


def _shell(args: list[str], incomplete: str) -> tuple[str, list[tuple[str, str]]]:
    """`limactl shell` parses its own flags (Lima's rules): complete them, `--instance`'s
    value and the instance name; the guest command is the shell's to complete."""
    from lima.commands.shell_args import BOOL_FLAGS, STRING_FLAGS, UsageError, parse_flags

    try:
        flags, rest = parse_flags(args)
    except UsageError as exc:
        if str(exc) == "flag needs an argument: --instance":
            return "nofile", [(n, "") for n in _instances(incomplete)]
        return "default", []
    if rest or "instance" in flags:
        return "default", []
    if incomplete.startswith("-"):
        names = sorted("--" + f for f in (*BOOL_FLAGS, *STRING_FLAGS))
        return "nofile", [(n, "") for n in names if n.startswith(incomplete)]
    return "nofile", [(n, "") for n in _instances(incomplete)]


def _argument(ctx: click.Context, arg: click.Argument,
              incomplete: str) -> tuple[str, list[tuple[str, str]]]:
    name = arg.name or ""
    chain = []
    walk: click.Context | None = ctx
    while walk is not None:
        chain.append(walk.info_name or "")
        walk = walk.parent
    if "disk" in chain:
        return "nofile", [(d, "") for d in _disks(incomplete)]
    if name in _INSTANCE_ARGS:
        return "nofile", [(n, "") for n in _instances(incomplete)]
    if name in _LOCATOR_ARGS:
        return "default", [(t, "") for t in template_names(incomplete)]
    if name in _BOTH_ARGS:
        found = _instances(incomplete) + template_names(incomplete)
        return "default", [(n, "") for n in found]
    return "default", []


def render(shell: str, directive: str, found: list[tuple[str, str]], current: str,
           descriptions: bool) -> str:
    """The answer `__complete` prints for `shell` (pure)."""
    lines = [directive]
    for value, help_text in found:
        if shell == "bash":
            # bash replaces only the part of the word after its last break character.
            cut = max(current.rfind(c) for c in _BASH_BREAKS)
            if cut >= 0 and value.startswith(current[: cut + 1]):
                value = value[cut + 1:]
            lines.append(value)
        elif shell == "zsh":
            value = value.replace("\\", "\\\\").replace(":", "\\:")
            lines.append(f"{value}:{help_text}" if descriptions and help_text else value)
        else:
            lines.append(f"{value}\t{help_text}" if descriptions and help_text else value)
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------
# verbs


def _shell_command(shell: str, how: str) -> click.Command:
    @click.command(shell, help=f"Generate the autocompletion script for {shell}\n\n{how}")
    @click.option("--no-descriptions", is_flag=True, help="disable completion descriptions")
    def command(no_descriptions: bool) -> None:
        click.echo(script(shell, not no_descriptions), nl=False)

    return command


@click.group(help="""Generate the autocompletion script for the specified shell

Generate the autocompletion script for limactl for the specified shell.
See each sub-command's help for details on how to use the generated script.
""")
def completion() -> None:
    pass


completion.add_command(_shell_command("bash", """\b
To load completions in the current shell session:
  source <(limactl completion bash)
To load them in every new session (needs the bash-completion package):
  limactl completion bash > /etc/bash_completion.d/limactl
"""))
completion.add_command(_shell_command("zsh", """\b
To load completions in the current shell session (after compinit):
  source <(limactl completion zsh)
To load them in every new session:
  limactl completion zsh > "${fpath[1]}/_limactl"
"""))
completion.add_command(_shell_command("fish", """\b
To load completions in the current shell session:
  limactl completion fish | source
To load them in every new session:
  limactl completion fish > ~/.config/fish/completions/limactl.fish
"""))
completion.add_command(_shell_command("powershell", """limapy has no PowerShell completion:
this command reports that and exits with status 1."""))


@click.command("__complete", hidden=True,
               context_settings={"ignore_unknown_options": True,
                                 "help_option_names": []})
@click.argument("argv", nargs=-1, type=click.UNPROCESSED)
def complete_words(argv: tuple[str, ...]) -> None:
    """Candidates for the completion scripts: [--no-descriptions] SHELL -- WORDS..."""
    rest = list(argv)
    descriptions = True
    if rest[:1] == ["--no-descriptions"]:
        descriptions = False
        rest = rest[1:]
    if not rest or rest[0] not in _SCRIPTS:
        raise LimaError("usage: limactl __complete [--no-descriptions] bash|zsh|fish -- WORDS")
    # click has taken the first `--` already (the one the scripts put before the words).
    shell, words = rest[0], rest[1:]
    if shell == "bash":
        # One argument: the command line up to the cursor, the program name first.
        words = _split_line(words[0] if words else "")[1:]
    else:
        words = [_unquote(w) for w in words]
    if not words:
        words = [""]
    directive, found = candidates(words)
    click.echo(render(shell, directive, found, words[-1], descriptions), nl=False)


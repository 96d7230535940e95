"""Getting code out of a model's answer, checking it parses, and explaining what it touches.

The lint here explains risky code to the person reviewing it; it never decides what is
safe. The child kernel's sandbox is the security boundary.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Collection
from dataclasses import dataclass

_FENCE = re.compile(
    r"^(?P<indent>[ \t]{0,3})(?P<fence>`{3,}|~{3,})[ \t]*(?P<lang>[\w+.-]*)[^\n]*\n"
    r"(?P<body>.*?)"
    r"(?:^(?P=indent)?(?P=fence)[ \t]*$|\Z)",
    re.DOTALL | re.MULTILINE,
)
_PYTHON_LANGS = {"python", "py", "python3", "ipython", "ipython3", "pycon", ""}


@dataclass(frozen=True)
class ExtractedCode:
    """The code to run or insert, and the answer's prose without the code blocks."""

    code: str
    explanation: str


class CodeProblem(ValueError):
    """Why an answer's code is unusable; the reason is sent back to the model once."""


def extract_code(answer: str) -> ExtractedCode:
    """The fenced Python block(s) of ``answer`` joined in order, checked with ``ast``.

    Raises :class:`CodeProblem` when there is no Python block or the code does not parse.
    An answer with no fence at all is accepted when it is entirely valid Python with at
    least one real statement (some local models answer with bare code).
    """
    blocks: list[str] = []
    prose: list[str] = []
    last = 0
    for m in _FENCE.finditer(answer):
        lang = m.group("lang").lower()
        if lang in _PYTHON_LANGS:
            body = m.group("body")
            if lang == "" and not _parses(body):
                continue  # an untagged block of output or shell text, not code
            blocks.append(_dedent_console(body))
            prose.append(answer[last : m.start()])
            last = m.end()
    prose.append(answer[last:])
    explanation = _tidy("".join(prose))
    if not blocks:
        bare = answer.strip()
        if bare and _parses(bare) and _has_statement(bare):
            return ExtractedCode(code=bare, explanation="")
        raise CodeProblem("the answer has no ```python code block")
    code = "\n\n".join(b.strip("\n") for b in blocks if b.strip()).strip() + "\n"
    if not code.strip():
        raise CodeProblem("the ```python code block is empty")
    try:
        ast.parse(code)
    except SyntaxError as exc:
        where = f" on line {exc.lineno}" if exc.lineno else ""
        raise CodeProblem(f"the code does not parse: {exc.msg}{where}") from None
    return ExtractedCode(code=code, explanation=explanation)


def _parses(text: str) -> bool:
    try:
        ast.parse(text)
    except (SyntaxError, ValueError):
        return False
    return True


def _has_statement(text: str) -> bool:
    tree = ast.parse(text)
    return any(
        not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Name | ast.Constant))
        for node in tree.body
    )


def _dedent_console(body: str) -> str:
    """Strip ``>>> `` / ``... `` prompts when a model writes a console session."""
    lines = body.splitlines()
    if (
        lines
        and all(
            ln.startswith((">>> ", "... ")) or not ln.strip() or ln == ">>>"
            for ln in lines
            if ln.strip()
        )
        and any(ln.startswith(">>> ") for ln in lines)
    ):
        return "\n".join(ln[4:] if ln.startswith((">>> ", "... ")) else ln for ln in lines)
    return body


def _tidy(text: str) -> str:
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


# --- explaining risky code ---------------------------------------------------------------

_RISKY_CALLS = {
    "os.system": "runs a shell command",
    "os.popen": "runs a shell command",
    "os.remove": "deletes a file",
    "os.unlink": "deletes a file",
    "os.rmdir": "deletes a folder",
    "shutil.rmtree": "deletes a folder tree",
    "eval": "evaluates a string as code",
    "exec": "executes a string as code",
    "__import__": "imports a module by name",
}
_RISKY_MODULES = {
    "subprocess": "starts processes",
    "socket": "opens network connections",
    "requests": "makes network requests",
    "urllib": "makes network requests",
    "http": "makes network requests",
    "ctypes": "calls native code",
}
_WRITERS = (
    "to_csv",
    "to_excel",
    "to_parquet",
    "to_json",
    "to_pickle",
    "to_sql",
    "savefig",
    "to_feather",
    "to_hdf",
)


def review_notes(code: str, frames: Collection[str] = ()) -> tuple[str, ...]:
    """Plain sentences about what the code does beyond reading the frames.

    ``frames`` are the user's variable names: reassigning one or changing it in place is
    worth a note, because the inserted cell would change the user's data.
    """
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return ()
    notes: dict[str, None] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
            )
            for name in names:
                root = name.split(".")[0]
                if root in _RISKY_MODULES:
                    notes[f"imports {root}, which {_RISKY_MODULES[root]}"] = None
        elif isinstance(node, ast.Call):
            name = _dotted(node.func)
            if name in _RISKY_CALLS:
                notes[f"calls {name}(), which {_RISKY_CALLS[name]}"] = None
            elif name == "open" and _opens_for_write(node):
                notes["writes a file with open()"] = None
            elif name.rsplit(".", 1)[-1] in _WRITERS:
                notes[f"writes a file ({name.rsplit('.', 1)[-1]})"] = None
            for kw in node.keywords:
                if (
                    kw.arg == "inplace"
                    and isinstance(kw.value, ast.Constant)
                    and kw.value.value
                    and _dotted(node.func).split(".")[0] in frames
                ):
                    notes[f"changes {_dotted(node.func).split('.')[0]} in place"] = None
        elif isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign | ast.Delete):
            targets = node.targets if isinstance(node, ast.Assign | ast.Delete) else [node.target]
            for target in targets:
                root = _root_name(target)
                if root in frames:
                    verb = (
                        "deletes"
                        if isinstance(node, ast.Delete)
                        else ("reassigns" if isinstance(target, ast.Name) else "modifies")
                    )
                    notes[f"{verb} your variable {root}"] = None
    return tuple(notes)


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return f"{inner}.{node.attr}" if inner else node.attr
    return ""


def _root_name(node: ast.AST) -> str:
    while isinstance(node, ast.Attribute | ast.Subscript):
        node = node.value
    return node.id if isinstance(node, ast.Name) else ""


def _opens_for_write(call: ast.Call) -> bool:
    mode = (
        call.args[1]
        if len(call.args) > 1
        else next((kw.value for kw in call.keywords if kw.arg == "mode"), None)
    )
    return (
        isinstance(mode, ast.Constant)
        and isinstance(mode.value, str)
        and any(c in mode.value for c in "wax+")
    )

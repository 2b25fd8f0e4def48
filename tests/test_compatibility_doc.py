"""docs/compatibility.md's matrix of client libraries and operations is
made from the tests: each test marked `@pytest.mark.proves("client:
operation", ...)` is listed in the cells it proves, and this test fails
when the document and the marks part. `python tests/test_compatibility_doc.py
--write` rewrites the matrix from the marks."""

import ast
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
DOC = TESTS.parent / "docs" / "compatibility.md"
BEGIN, END = "<!-- client-matrix:begin -->", "<!-- client-matrix:end -->"

CLIENTS = ["confluent-kafka", "kafka-python", "aiokafka", "kcat"]
OPERATIONS = [
    "produce",
    "consume",
    "compression codecs",
    "data survives a broker SIGKILL",
    "leader failover without loss",
    "consumer group, classic protocol",
    "consumer group, KIP-848 protocol",
    "consumer group, online migration between protocols",
    "static group membership",
    "manual assignment with committed offsets",
    "list, describe and delete groups",
    "group configs",
    "create, grow and delete topics",
    "describe configs",
    "alter configs (incremental)",
    "alter configs (legacy)",
    "every Kafka 4 topic config",
    "broker recompression (topic compression.type)",
    "per-record errors (KIP-467)",
    "incremental fetch sessions (KIP-227)",
    "list offsets, delete records",
    "describe cluster",
    "describe topic partitions (KIP-966)",
    "elect leaders",
    "partition reassignment",
    "describe log dirs, alter replica log dirs",
    "describe metadata quorum",
    "list config resources",
    "authorized operations (KIP-430)",
]


def proven():
    """{(client, operation): [test file::name, ...]} from the marks."""
    cells = {}
    for path in sorted(TESTS.rglob("test_*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for decorator in node.decorator_list:
                if not (isinstance(decorator, ast.Call)
                        and ast.unparse(decorator.func) == "pytest.mark.proves"):
                    continue
                for argument in decorator.args:
                    client, _, operation = argument.value.partition(": ")
                    assert client in CLIENTS, f"{node.name}: unknown client {client!r}"
                    assert operation in OPERATIONS, f"{node.name}: unknown {operation!r}"
                    name = f"{path.relative_to(TESTS)}::{node.name}"
                    cells.setdefault((client, operation), []).append(name)
    return cells


def render(cells):
    lines = ["| operation | " + " | ".join(CLIENTS) + " |",
             "|---|" + "---|" * len(CLIENTS)]
    for operation in OPERATIONS:
        row = ["yes" if (client, operation) in cells else "" for client in CLIENTS]
        lines.append(f"| {operation} | " + " | ".join(row) + " |")
    lines += ["", "Proved by:", ""]
    for operation in OPERATIONS:
        for client in CLIENTS:
            for test in cells.get((client, operation), []):
                lines.append(f"- {operation}, {client}: `tests/{test}`")
    return "\n".join(lines)


def documented():
    text = DOC.read_text()
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip("\n")


def test_the_compatibility_matrix_is_the_one_the_tests_prove():
    assert documented() == render(proven()), (
        "docs/compatibility.md's client matrix is stale: run "
        "`python tests/test_compatibility_doc.py --write`")


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    text = DOC.read_text()
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    DOC.write_text(f"{head}{BEGIN}\n{render(proven())}\n{END}{tail}")

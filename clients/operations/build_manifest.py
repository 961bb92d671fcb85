"""Build the persisted-query manifest of the app's operations, or check that it is current.

Each `*.graphql` file beside this script holds one named operation, named like
the file. Every operation is checked against the repository's `schema.graphql`;
its body is graphql-core's printed form of the document (comments and layout
do not reach the wire), and its id is the SHA-256 of that body, which is the
hash clients send as `extensions.persistedQuery.sha256Hash`.

The manifest is Apollo's persisted-query manifest format, the file that
`WEATHERNOTE_GRAPHQL_SAFELIST` reads. It is written twice with the same bytes:
here, and inside the Python client's package, which sends these bodies.

    .venv/bin/python clients/operations/build_manifest.py           # write both copies
    .venv/bin/python clients/operations/build_manifest.py --check   # exit 1 when either is stale
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

from graphql import GraphQLError, GraphQLSchema, OperationDefinitionNode, build_schema, parse, print_ast, validate

OPERATIONS_DIR = Path(__file__).resolve().parent
ROOT = OPERATIONS_DIR.parent.parent
SCHEMA_FILE = ROOT / "schema.graphql"
MANIFEST_NAME = "persisted-query-manifest.json"
TARGETS = (OPERATIONS_DIR / MANIFEST_NAME, ROOT / "clients" / "python" / "weathernote_client" / MANIFEST_NAME)


class OperationFileError(Exception):
    """An operation file that cannot go into the manifest."""


def operation_entry(path: Path, schema: GraphQLSchema) -> dict[str, str]:
    """The manifest entry of one operation file, after checking it against the schema."""
    try:
        document = parse(path.read_text(encoding="utf-8"))
    except GraphQLError as exc:
        raise OperationFileError(f"{path.name}: {exc}") from None
    definitions = [node for node in document.definitions if isinstance(node, OperationDefinitionNode)]
    if len(definitions) != 1 or definitions[0].name is None:
        raise OperationFileError(f"{path.name}: needs exactly one named operation")
    [operation] = definitions
    name = definitions[0].name.value
    if name != path.stem:
        raise OperationFileError(f"{path.name}: the operation is named {name!r}; name it like its file")
    errors = validate(schema, document)
    if errors:
        raise OperationFileError(f"{path.name}: " + "; ".join(error.message for error in errors))
    body = print_ast(document)
    return {
        "id": hashlib.sha256(body.encode("utf-8")).hexdigest(),
        "name": name,
        "type": operation.operation.value,
        "body": body,
    }


def build(operations_dir: Path = OPERATIONS_DIR, schema_file: Path = SCHEMA_FILE) -> str:
    """The manifest's text: every operation of `operations_dir`, in name order."""
    schema = build_schema(schema_file.read_text(encoding="utf-8"))
    entries = [operation_entry(path, schema) for path in sorted(operations_dir.glob("*.graphql"))]
    if not entries:
        raise OperationFileError(f"no *.graphql operations in {operations_dir}")
    manifest = {"format": "apollo-persisted-query-manifest", "version": 1, "operations": entries}
    return json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"


def stale_targets(text: str) -> list[Path]:
    """The manifest copies whose content is not `text`."""
    return [path for path in TARGETS if not path.is_file() or path.read_text(encoding="utf-8") != text]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 when a copy is stale")
    arguments = parser.parse_args(argv)
    try:
        text = build()
    except (OperationFileError, OSError) as exc:
        print(f"build_manifest: {exc}", file=sys.stderr)
        return 1
    stale = stale_targets(text)
    if arguments.check:
        for path in stale:
            print(f"stale: {path.relative_to(ROOT)} (run clients/operations/build_manifest.py)", file=sys.stderr)
        return 1 if stale else 0
    for path in stale:
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

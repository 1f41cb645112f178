"""The generated reference pages (environment variables, HTTP endpoints, third-party models) match
the code. When one fails, regenerate the pages and commit them:

    .venv/bin/python -m anonymizer_tools.docs_reference --write
"""

import re

import pytest

from anonymizer_shared.files import PROJECT_ROOT
from anonymizer_tools import docs_reference

STALE = "{page} is stale: the code changed since it was generated. Regenerate it with `{command}` and commit it."


@pytest.mark.parametrize("page", list(docs_reference.PAGES), ids=str)
def test_generated_page_is_current(page):
    committed = (PROJECT_ROOT / page).read_text() if (PROJECT_ROOT / page).is_file() else ""
    assert committed == docs_reference.PAGES[page](), STALE.format(page=page, command=docs_reference.REGENERATE)


def test_every_settings_field_is_on_the_environment_page():
    page = docs_reference.environment_page()
    classes = docs_reference.settings_classes()
    assert {cls.__name__ for cls in classes} >= {"ApiSettings", "ServerSettings"}
    for cls in classes:
        for name, field in cls.model_fields.items():
            for variable in docs_reference.variable_names(cls, name, field):
                assert f"`{variable}`" in page


def test_every_settings_field_has_a_description():
    for cls in docs_reference.settings_classes():
        for name, field in cls.model_fields.items():
            assert field.description or name in docs_reference.FALLBACK_DESCRIPTIONS, (
                f"{cls.__name__}.{name} has no description: give it Field(description=...), then run "
                f"`{docs_reference.REGENERATE}`"
            )


SOURCES = ("*.py", "*.sh", "*Dockerfile", "docker-compose.yml")
VARIABLE = re.compile(r"\bANONYMIZER_[A-Z0-9_]*[A-Z0-9]\b")


def variables_in_code() -> set[str]:
    found = set()
    for folder in (*docs_reference.PACKAGES, "bench", "docker", "scripts", "tests"):
        for pattern in SOURCES:
            for path in (PROJECT_ROOT / folder).rglob(pattern):
                found |= set(VARIABLE.findall(path.read_text(errors="replace")))
    compose = PROJECT_ROOT / "docker-compose.yml"
    if compose.is_file():
        found |= set(VARIABLE.findall(compose.read_text()))
    return found


def test_every_variable_the_code_names_is_documented():
    page = docs_reference.environment_page()
    missing = sorted(name for name in variables_in_code() if f"`{name}`" not in page)
    assert not missing, (
        f"{', '.join(missing)} named in the code but not on docs/reference/environment.md: make it a settings "
        "field with a description, or add it to OTHER_VARIABLES in anonymizer_tools/docs_reference.py; then run "
        f"`{docs_reference.REGENERATE}`"
    )


def test_http_page_lists_every_operation():
    document = docs_reference.openapi_document()
    page = docs_reference.http_page(document)
    for path, operations in document["paths"].items():
        for method in operations:
            assert f"### `{method.upper()} {path}`" in page

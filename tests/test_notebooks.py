"""Every chapter executes from a fresh kernel in smoke mode (same code, smaller sizes).

Executed chapters are saved where `book/build.py --smoke` looks, so the site test reuses them.
"""
import ast

import pytest

from dstutor.chapters import REPO_ROOT, chapter_paths
from dstutor_book.execution import ChapterError, execute_chapter, missing_figures, read_chapter, save_executed
from dstutor_book.prose_check import typed_quantities, typed_verdicts

SMOKE_BOOK_CHAPTERS = REPO_ROOT / "build" / "smoke-book" / "chapters"


def test_the_course_has_chapters():
    assert chapter_paths(), "no notebooks/NN_*.md found"


def _names(source: str, context: type) -> set[str]:
    """Names a cell reads (ast.Load) or binds (ast.Store); a comprehension's own variables stay inside it."""
    tree = ast.parse("\n".join(line for line in source.splitlines() if not line.startswith(("%", "!"))))
    inner = {id(node) for comprehension in ast.walk(tree) if isinstance(comprehension, ast.comprehension)
             for node in ast.walk(comprehension.target)}
    return {node.id for node in ast.walk(tree)
            if isinstance(node, ast.Name) and isinstance(node.ctx, context) and id(node) not in inner}


@pytest.mark.parametrize("chapter", chapter_paths(), ids=lambda p: p.stem)
def test_every_name_a_claims_table_reads_is_assigned_in_one_cell(chapter):
    # A name set in two cells can be changed by a later cell before the verdict reads it (chapter 10's
    # `apart` once held the curriculum orders when the replay claim read it).
    cells = [cell.source for cell in read_chapter(chapter, smoke=False).cells if cell.cell_type == "code"]
    for i in [i for i, source in enumerate(cells) if "claims_table(" in source]:
        for name in sorted(_names(cells[i], ast.Load)):
            assigned = [j for j, source in enumerate(cells) if j != i and name in _names(source, ast.Store)]
            assert len(assigned) <= 1, f"the claims table (code cell {i + 1}) reads {name!r}, set in cells {[j + 1 for j in assigned]}"


@pytest.mark.notebook
@pytest.mark.parametrize("chapter", chapter_paths(), ids=lambda p: p.stem)
def test_chapter_runs_in_smoke_mode(chapter):
    try:
        run = execute_chapter(chapter, smoke=True, timeout=600)
    except ChapterError as error:
        pytest.fail(str(error), pytrace=False)
    assert not missing_figures(run.notebook), f"code cells {missing_figures(run.notebook)} drew no figure"
    typed = typed_quantities(run.notebook)  # in smoke mode, a number typed from a full run is caught too
    assert not typed, "prose states quantities no cell output contains:\n" + "\n".join(typed)
    verdicts = typed_verdicts(run.notebook)
    assert not verdicts, "prose states outcomes no cell computes (compute the sentence, or ask it):\n" + "\n".join(verdicts)
    save_executed(run, SMOKE_BOOK_CHAPTERS, smoke=True)

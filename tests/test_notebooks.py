"""Every chapter executes from a fresh kernel in smoke mode (same code, smaller sizes).

Executed chapters are saved where `book/build.py --smoke` looks, so the site test reuses them.
"""
import pytest

from dstutor.chapters import REPO_ROOT, chapter_paths
from dstutor.execution import ChapterError, execute_chapter, missing_figures, save_executed
from dstutor.prose_check import typed_quantities

SMOKE_BOOK_CHAPTERS = REPO_ROOT / "build" / "smoke-book" / "chapters"


def test_the_course_has_chapters():
    assert chapter_paths(), "no notebooks/NN_*.md found"


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
    save_executed(run, SMOKE_BOOK_CHAPTERS, smoke=True)

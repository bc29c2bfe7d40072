"""dstutor.chapters: smoke injection, failure reports that name the cell, runtime records."""
import asyncio
import math
import queue
import textwrap
import time

import nbformat
import pytest

from dstutor import chapters
from dstutor_book import execution

CHAPTER = textwrap.dedent('''\
    ---
    kernelspec: {{display_name: Python 3, language: python, name: python3}}
    dstutor:
      smoke: {{steps: 2}}
    ---
    # 99 · A test chapter

    ```{{code-cell}} ipython3
    :tags: [parameters]
    steps = 100
    ```

    ```{{code-cell}} ipython3
    import os
    print(steps, os.environ["DSTUTOR_SMOKE"])
    {extra}
    ```
    ''')


def write_chapter(tmp_path, extra=""):
    path = tmp_path / "99_test.md"
    path.write_text(CHAPTER.format(extra=extra))
    return path


def test_smoke_overrides_follow_the_parameters_cell(tmp_path):
    notebook = execution.read_chapter(write_chapter(tmp_path), smoke=True)
    tags = [cell.metadata.get("tags", []) for cell in notebook.cells if cell.cell_type == "code"]
    assert tags[:2] == [["parameters"], ["injected-parameters"]]
    assert "steps = 2" in notebook.cells[2].source
    full = execution.read_chapter(write_chapter(tmp_path), smoke=False)
    assert len(full.cells) == len(notebook.cells) - 1


def test_execute_runs_smoke_sizes_and_sets_the_flag(tmp_path):
    run = execution.execute_chapter(write_chapter(tmp_path), smoke=True, timeout=60)
    assert run.notebook.cells[-1].outputs[0]["text"].strip() == "2 1"


def test_failure_names_the_cell_and_the_error(tmp_path):
    with pytest.raises(execution.ChapterError) as error:
        execution.execute_chapter(write_chapter(tmp_path, extra="1 / 0"), smoke=False, timeout=60)
    message = str(error.value)
    assert "99_test.md: code cell 2 raised" in message  # counted as a reader counts: code cells, from 1
    assert "ZeroDivisionError: division by zero" in message and "1 / 0" in message


def test_figures_are_stored_even_under_an_agg_backend(tmp_path, monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")  # what a headless shell or CI often sets
    path = write_chapter(tmp_path, extra="import matplotlib.pyplot as plt\nplt.plot([1, 2]); plt.show()")
    run = execution.execute_chapter(path, smoke=False, timeout=60)
    assert execution.missing_figures(run.notebook) == []
    run.notebook.cells[-1].outputs = []
    assert execution.missing_figures(run.notebook) == [2]


def test_smoke_overrides_without_parameters_cell_is_an_error(tmp_path):
    path = write_chapter(tmp_path)
    path.write_text(path.read_text().replace(":tags: [parameters]\n", ""))
    with pytest.raises(execution.ChapterError, match="0 cells tagged 'parameters'"):
        execution.read_chapter(path, smoke=True)


def test_runtimes_round_trip_and_note(tmp_path):
    path = write_chapter(tmp_path)
    runtimes = tmp_path / "runtimes.json"
    table = chapters.chapter_runtimes(runtimes, directory=tmp_path)
    assert math.isnan(table.loc["99", "CPU seconds"])
    execution.record_runtime(execution.ChapterRun(path, None, 12.34), "cpu", runtimes)
    execution.record_runtime(execution.ChapterRun(path, None, 3.0), "cuda", runtimes)
    table = chapters.chapter_runtimes(runtimes, directory=tmp_path)
    assert table.loc["99", "CPU seconds"] == 12.3 and table.loc["99", "GPU seconds"] == 3.0
    assert table.loc["99", "title"] == "99 · A test chapter"


def test_runtime_table_says_not_measured_instead_of_nan(tmp_path):
    path = write_chapter(tmp_path)
    runtimes = tmp_path / "runtimes.json"
    execution.record_runtime(execution.ChapterRun(path, None, 12.34), "cpu", runtimes)
    html = chapters.runtime_table(runtimes, directory=tmp_path).to_html()
    assert "not measured yet" in html and "nan" not in html.lower() and ">12<" in html


def test_runtime_note_for_unknown_chapter_lists_the_chapters():
    with pytest.raises(ValueError, match="no chapter numbered '77'"):
        chapters.runtime_note("77")


def test_content_hash_changes_with_code_and_mode_not_with_prose_or_comments(tmp_path):
    path = write_chapter(tmp_path)
    before = execution.content_hash(path, smoke=True)
    assert before != execution.content_hash(path, smoke=False)
    path.write_text(path.read_text() + "\nA new paragraph of prose.\n")
    path.write_text(path.read_text().replace("import os", "import os  # why: the mode comes from the env"))
    assert before == execution.content_hash(path, smoke=True)
    path.write_text(path.read_text().replace("print(steps,", "print(steps + 1,"))
    assert before != execution.content_hash(path, smoke=True)


def test_a_prose_edit_is_copied_into_the_executed_chapter_with_its_outputs(tmp_path):
    path = write_chapter(tmp_path)
    notebook = execution.read_chapter(path, smoke=False)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    code[1].outputs = [nbformat.v4.new_output("stream", name="stdout", text="measured 42\n")]
    out_dir = tmp_path / "out"
    execution.save_executed(execution.ChapterRun(path, notebook, 1.0), out_dir, smoke=False)
    path.write_text(path.read_text().replace("# 99 · A test chapter", "# 99 · A test chapter\n\nNew prose."))
    assert execution.is_current(path, out_dir, smoke=False)
    execution.refresh_text(path, out_dir, smoke=False)
    refreshed = nbformat.read(out_dir / "99_test.ipynb", as_version=4)
    assert "New prose." in refreshed.cells[0].source
    assert refreshed.cells[-1].outputs[0]["text"] == "measured 42\n"
    assert execution.is_current(path, out_dir, smoke=False)


@pytest.mark.parametrize("markup", [":::{dropdown} Solutions\n1. x\n:::", "```{note}\nhi\n```", "Use {math}`x^2` here.",
                                    "<details>\n<summary>Solutions</summary>\n"])
def test_markup_lab_cannot_render_is_reported(tmp_path, markup):
    path = write_chapter(tmp_path)
    path.write_text(path.read_text() + "\n" + markup + "\n")
    problems = execution.lab_unrenderable(execution.read_chapter(path, smoke=False))
    assert len(problems) == 1 and problems[0].startswith("markdown cell 2:")


def test_details_inline_code_and_math_are_fine_in_lab(tmp_path):
    path = write_chapter(tmp_path)
    path.write_text(path.read_text() + "\nThe f-string `{device}` and $x^2$.\n\n<details>\n<summary>Solutions</summary>\n\n1. a\n\n</details>\n")
    assert execution.lab_unrenderable(execution.read_chapter(path, smoke=False)) == []


@pytest.mark.parametrize("chapter", chapters.chapter_paths(), ids=lambda p: p.stem)
def test_chapters_render_in_jupyterlab(chapter):
    assert execution.lab_unrenderable(execution.read_chapter(chapter, smoke=False)) == []


class MissedWakeUpChannel:
    """A channel whose poll never wakes on arrival: a message is returned only when the timeout ends."""

    def __init__(self, arrives_after: float):
        self.arrival = time.monotonic() + arrives_after

    async def get_msg(self, timeout=None):
        await asyncio.sleep(timeout)
        if time.monotonic() >= self.arrival:
            return {"msg": "reply"}
        raise queue.Empty


def test_polling_in_steps_bounds_a_missed_wake_up_and_still_times_out():
    channel = MissedWakeUpChannel(arrives_after=0.1)
    execution.poll_in_steps(channel, step=0.05)
    began = time.monotonic()
    assert asyncio.run(channel.get_msg(timeout=30)) == {"msg": "reply"}
    assert time.monotonic() - began < 1  # unwrapped, the reply would come after the full 30 s
    never = MissedWakeUpChannel(arrives_after=1e9)
    execution.poll_in_steps(never, step=0.05)
    began = time.monotonic()
    with pytest.raises(queue.Empty):
        asyncio.run(never.get_msg(timeout=0.3))
    assert 0.25 < time.monotonic() - began < 1


def test_a_chapter_edited_while_it_runs_is_stale_afterwards(tmp_path):
    # The cell edits its own chapter's code, as a writer saving mid-run would: the outputs are of the old code.
    path = write_chapter(tmp_path, extra='open("99_test.md", "a").write("\\n```{code-cell} ipython3\\nx = 1\\n```\\n")')
    run = execution.execute_chapter(path, smoke=False, timeout=60)
    execution.save_executed(run, tmp_path / "out", smoke=False)
    assert not execution.is_current(path, tmp_path / "out", smoke=False)

"""The typed-result checks: measured numbers in prose come from a cell's output, outcomes are not typed in words."""
import nbformat.v4 as v4

from dstutor_book.prose_check import typed_quantities, typed_verdicts


def chapter(markdown: str, output: str = "") -> "nbformat.NotebookNode":  # noqa: F821
    code = v4.new_code_cell("print(result)", outputs=[v4.new_output("stream", name="stdout", text=output)])
    return v4.new_notebook(cells=[v4.new_markdown_cell(markdown), code])


def test_a_typed_measurement_is_reported_and_a_computed_one_is_not():
    prose = "Checkpointing saves 83 % of activation memory and the loss reaches 4.457 after 20 passes."
    problems = typed_quantities(chapter(prose, output="saved: 61 %, loss 4.512"))
    assert [p.split(" in:")[0] for p in problems] == ["'83 %'", "'4.457'", "'20 passes'"]
    assert typed_quantities(chapter(prose, output="saved 83 %; loss 4.457; 20 passes over 32 blocks")) == []


def test_numbers_match_across_thousands_separators_but_not_inside_other_numbers():
    assert typed_quantities(chapter("It is 4,096 times smaller.", output="ratio 4096")) == []
    assert typed_quantities(chapter("It is 4,096 times smaller.", output="ratio 14096")) != []


def test_quotes_math_code_citations_and_fact_sections_are_exempt():
    prose = ("The guide promises \"30 % less training time\" and “−40 % memory”. "
             "Decay shrinks weights by $0.003 %$ per step; `lr = 3e-3` gives `1.5 s`.\n\n"
             "V3 used 2.788 M GPU hours (V3 §1).\n\n"
             "## What DeepSeek actually does\n\n- 14.8 T tokens, 10 % of them code.\n\n"
             "## References\n\n- A paper with 93.3 % in its abstract.")
    assert typed_quantities(chapter(prose)) == []
    assert typed_quantities(chapter(prose + "\n\n## Summary\n\nOurs is 2.5× faster.")) != []


def test_settings_below_one_are_not_measurements():
    assert typed_quantities(chapter("AdamW with betas (0.9, 0.95) and weight decay 0.1.")) == []


def test_a_typed_verdict_is_reported_and_a_question_condition_or_definition_is_not():
    for typed in ("A freshly initialised model never answers correctly.", "The small model beats TF-IDF here.",
                  "The course's tiny models are at chance on unseen idioms.", "Measured here, the formula holds.",
                  "Prioritised replay rarely helps.", "The absorbed path is 2 times faster than the naive one."):
        assert typed_verdicts(chapter(typed)) != [], typed
    for fine in ("Does the absorbed path pay off there?", "The computed sentence says whether ours beats TF-IDF.",
                 "The claim holds if the seeds separate.", "Shared experts are always on.",
                 "The KL estimate is never negative.", 'The guide says "LoRA beats full fine-tuning".',
                 "## Summary\n\nThe chance level sits beside every accuracy."):
        assert typed_verdicts(chapter(fine)) == [], fine
    assert typed_verdicts(chapter("## References\n\n- Smith (2020) shows that MoE beats dense models.")) == []

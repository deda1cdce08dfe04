"""ConText over the packaged lexicon: the issue's sentences, and the NegEx test kit's figures."""

from __future__ import annotations

from ml_pipelines.nlp.context import ContextAssessor, sentence_bounds
from ml_pipelines.nlp.eval_context import evaluate_context, evaluate_context_ctakes
from ml_pipelines.nlp.lexicon import LEXICON_FILE, derive_lexicon, format_lexicon, load_lexicon


def _assess(text: str, *phrases: str) -> list[str]:
    spans = [(text.index(p), text.index(p) + len(p)) for p in phrases]
    return ContextAssessor().assess(text, spans)


def test_a_list_after_denies_is_negated_throughout():
    assert _assess("Denies hypertension, psychosis and glaucoma.", "hypertension", "psychosis",
                   "glaucoma") == ["negated", "negated", "negated"]


def test_a_relative_makes_family_history_and_rule_out_hypothetical():
    assert _assess("Her mother has diabetes.", "diabetes") == ["family"]
    assert _assess("Rule out pneumonia.", "pneumonia") == ["hypothetical"]


def test_scope_ends_at_a_terminator_and_at_the_sentence():
    assert _assess("No fever but a cough.", "fever", "cough") == ["negated", "affirmed"]
    assert _assess("Pneumonia was ruled out. Cough present.", "Pneumonia", "Cough") == [
        "negated", "affirmed"]


def test_a_pseudo_trigger_does_not_negate():
    assert _assess("No change in the effusion.", "effusion") == ["affirmed"]


def test_sentences_split_at_bullets_and_blank_lines():
    text = "# Plan\n- cough\n- fever\n\nNo rash."
    assert [text[s:e] for s, e in sentence_bounds(text)] == ["# Plan", "- cough", "- fever",
                                                             "No rash."]


def test_packaged_lexicon_is_the_derivation_of_the_published_terms(shared_data):
    derived = derive_lexicon(
        negex_triggers=shared_data / "negex" / "chapmanbe-negex" / "negex_triggers.txt",
        medspacy_rules=shared_data / "negex" / "medspacy" / "context_rules.json",
    )
    assert LEXICON_FILE.read_text(encoding="utf-8") == format_lexicon(derived)
    assert len(load_lexicon()) == 823


def test_negex_test_kit_precision_and_recall_per_class(shared_data):
    figures = evaluate_context(shared_data)
    assert (figures["rows"], figures["scored"], figures["phrase_not_found"]) == (1235, 1232, 3)
    assert figures["accuracy"] == 0.9505
    negated = figures["per_class"]["negated"]
    assert (negated["tp"], negated["fp"], negated["fn"]) == (244, 12, 12)
    assert (negated["precision"], negated["recall"]) == (0.9531, 0.9531)
    affirmed = figures["per_class"]["affirmed"]
    assert (affirmed["precision"], affirmed["recall"]) == (0.9883, 0.9498)
    assert figures["confusion"]["affirmed"] == {
        "affirmed": 927, "negated": 12, "hypothetical": 37, "family": 0}


def test_ctakes_hand_labelled_phrases_per_class(shared_data):
    figures = evaluate_context_ctakes(shared_data)
    assert (figures["scored"], figures["accuracy"]) == (42, 0.9762)
    per_class = {label: (s["tp"], s["fp"], s["fn"]) for label, s in figures["per_class"].items()}
    assert per_class == {"affirmed": (7, 0, 0), "negated": (11, 1, 0),
                         "hypothetical": (11, 0, 1), "family": (12, 0, 0)}

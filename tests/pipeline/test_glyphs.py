"""The glyphs task: characters rendered from the installed fonts, split by font."""

import numpy as np
import pytest
import torch

from edgekd.core.errors import DataError
from edgekd.data import glyphs, load_data
from edgekd.pipeline.opening import open_run


def test_glyphs_has_47_classes_at_32px_and_holds_out_whole_fonts():
    data = load_data("glyphs:1")
    fonts = glyphs.text_fonts()
    held = [f for f in fonts if glyphs.is_held_out(f)]
    assert data.input_shape == (1, 32, 32) and data.num_classes == 47
    assert {"O", "0", "I", "1", "l"} <= set(data.classes)
    assert len(data.labels) == 47 * len(fonts) and len(data.index("val")) == 47 * len(held)
    # every held-out font's name is in the note, and the training fonts are named apart from them
    note = data.source_note
    train_part, held_part = note.split("held out:")
    assert glyphs.fonts_fingerprint(fonts) in note
    assert all(f.name in held_part and f.name not in train_part for f in held)
    # held-out labels: each class once per held-out font
    counts = torch.bincount(data.labels[data.index("val")], minlength=47)
    assert counts.tolist() == [len(held)] * 47


def test_rendering_is_seeded_per_font_and_confusable_classes_differ():
    fonts = glyphs.text_fonts()
    alone, _, _ = glyphs.render_glyphs(fonts[1:2], 2)
    together, _, font_of = glyphs.render_glyphs(fonts[:2], 2)
    assert np.array_equal(alone, together[font_of == 1])  # adding a font changes no other image
    images, labels, _ = glyphs.render_glyphs(fonts[:1], 1)
    letter_o, zero = images[labels == glyphs.GLYPH_CLASSES.index("O")], images[labels == 0]
    assert not np.array_equal(letter_o, zero)
    assert images.std() > 20  # jitter, backgrounds and noise: not a blank page


def test_glyphs_bad_input_is_a_clear_error(monkeypatch):
    with pytest.raises(DataError, match="glyphs:N takes the renderings"):
        load_data("glyphs:many")
    fonts = glyphs.text_fonts()
    monkeypatch.setattr(glyphs, "text_fonts", lambda: fonts[:3])
    with pytest.raises(DataError, match="needs at least 4 training and 2 held-out text fonts"):
        load_data("glyphs:1")


def test_a_run_refuses_data_that_changed_since_it_started(tmp_path, make_tiny_config, monkeypatch):
    cfg = make_tiny_config(data="glyphs:1")
    open_run(cfg, tmp_path)
    assert (tmp_path / cfg.name / "data.json").is_file()
    fonts = glyphs.text_fonts()
    monkeypatch.setattr(glyphs, "text_fonts", lambda: fonts[:-1])  # a font package was removed
    with pytest.raises(DataError, match="changed since it started"):
        open_run(cfg, tmp_path)

"""pair_folder: the one writer and reader of pair folders (file names, manifest rows)."""

import numpy as np
import pytest
from PIL import Image

from defect_gen.errors import DefectGenError
from defect_gen.pipeline import pair_folder


def _manifest(folder, lines: list[str]) -> None:
    (folder / pair_folder.MANIFEST).write_text("".join(lines), encoding="utf-8")


def test_writer_appends_one_flushed_row_per_pair(tmp_path):
    with pair_folder.ManifestWriter(str(tmp_path)) as manifest:
        manifest.append({"name": "b", "seed": 1})
        # flushed at once: a kill after a row keeps it
        assert (tmp_path / pair_folder.MANIFEST).read_text() == '{"name": "b", "seed": 1}\n'
        manifest.append({"name": "a"})
    with pair_folder.ManifestWriter(str(tmp_path)) as manifest:  # appends, as --resume does
        manifest.append({"name": "b", "seed": 2})
    assert [r["name"] for r in pair_folder.read_rows(str(tmp_path))] == ["b", "a", "b"]
    # in name order, one per name, the last written wins
    assert pair_folder.manifest_rows(str(tmp_path)) == [{"name": "a"}, {"name": "b", "seed": 2}]


def test_strict_reading_ignores_only_a_cut_short_last_line(tmp_path):
    _manifest(tmp_path, ['{"name": "a"}\n', '\n', '{"name": "b"}\n', '{"name": "c", "fil'])
    assert [r["name"] for r in pair_folder.read_rows(str(tmp_path))] == ["a", "b"]
    _manifest(tmp_path, ['{"name": "a"}\n', 'not json\n', '{"name": "b"}\n'])
    with pytest.raises(DefectGenError, match="line 2 is not valid JSON: the manifest is damaged"):
        pair_folder.read_rows(str(tmp_path))
    _manifest(tmp_path, ['{"name": "a"}\n', '[1, 2]\n'])
    with pytest.raises(DefectGenError, match='line 2: expected a JSON object with a "name" string'):
        pair_folder.read_rows(str(tmp_path))


def test_reading_a_finished_folder_skips_every_line_that_is_no_json_object(tmp_path):
    """What evaluate, mix and filter read: a hand-edited manifest does not stop them."""
    _manifest(tmp_path, ['{"name": "a", "source": "s.png"}\n', 'not json\n', '[1, 2]\n', '{"source": "t.png"}\n',
                         '{"name": "a", "window": [0, 0, 4, 4]}\n', '{"name": "b"'])
    rows = pair_folder.read_rows(str(tmp_path), strict=False)
    assert rows == [{"name": "a", "source": "s.png"}, {"source": "t.png"}, {"name": "a", "window": [0, 0, 4, 4]}]
    assert pair_folder.rows_by_name(str(tmp_path)) == {"a": {"name": "a", "window": [0, 0, 4, 4]}}
    assert pair_folder.read_rows(str(tmp_path / "none"), strict=False) == []
    assert not pair_folder.has_manifest(str(tmp_path / "none")) and pair_folder.has_manifest(str(tmp_path))


def test_copied_pairs_are_named_as_written_ones(tmp_path):
    """mix and filter copy pairs with the file names `write_pair` gives the paired layout."""
    src, out = tmp_path / "src", tmp_path / "out"
    index = np.zeros((8, 8), np.uint8)
    index[2:5, 2:5] = 2
    row = pair_folder.write_pair(str(src), "mvtec", "x", np.full((8, 8, 3), 9, np.uint8), index, ["a", "b"])
    assert row["files"] == {"image": "test/b/x.png", "mask": "ground_truth/b/x_mask.png"}
    files = pair_folder.copy_pair({k: str(src / rel) for k, rel in row["files"].items()}, str(out), "m_x")
    assert files == {k: v for k, v in pair_folder.pair_files("paired", "m_x", "b").items() if k != "mask_color"}
    rgb, mask = pair_folder.read_pair(str(src), row, "mvtec", ["a", "b"])  # binary on disk: the row's class
    assert (rgb == 9).all() and np.array_equal(mask, index)
    assert np.asarray(Image.open(out / files["mask"])).max() == 255  # copied as it is


def test_folder_refusals_name_the_parameters_and_each_command_its_flags(tmp_path):
    from defect_gen.cli import paint, sample

    with pytest.raises(DefectGenError) as err:
        pair_folder.prepare_dir(str(tmp_path / "s"), "paired", overwrite=True, resume=True)
    assert str(err.value) == "overwrite and resume contradict each other: choose one"
    assert err.value.render(sample.FLAGS) == "--overwrite and --resume contradict each other: choose one"
    with pytest.raises(DefectGenError) as err:
        pair_folder.prepare_dir(str(tmp_path / "s"), "paired", overwrite=False, resume=True)
    assert err.value.render(sample.FLAGS).startswith(f"--resume: {tmp_path / 's' / 'manifest.jsonl'} not found")
    out = tmp_path / "{resume}"  # braces in a path are shown as they are
    (out / "images").mkdir(parents=True)
    (out / "images" / "x.png").write_bytes(b"")
    with pytest.raises(DefectGenError) as err:
        pair_folder.prepare_dir(str(out), "paired", overwrite=False)
    assert str(err.value) == (f"{out} already holds generated pairs (images/); pass resume to finish that run, "
                              f"overwrite to replace its pairs, or choose another sample_dir")
    for command in (sample, paint):
        assert err.value.render(command.FLAGS) == (
            f"{out} already holds generated pairs (images/); pass --resume to finish that run, --overwrite to "
            f"replace its pairs, or choose another --sample_dir")
    with pytest.raises(DefectGenError) as err:
        pair_folder.pair_files("coco", "x", "")
    assert err.value.render(sample.FLAGS) == "--layout 'coco': expected one of paired, mvtec, defect_spectrum"

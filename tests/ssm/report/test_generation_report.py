"""The generation-speed report: rows from runs' gen_* keys, the table and the plot."""
import pytest

from ssm.report.callbacks import ComparisonReport
from ssm.report.generation import format_generation_table, generation_plot, read_rows


def test_rows_read_back_from_the_csv_and_tabled(tmp_path):
    (tmp_path / "g.csv").write_text(
        "decoder,batch_size,new_tokens,tokens_per_s,seconds,peak_mem_mb,peak_mem_kind,cache_mb\n"
        "mamba,1,64,200.5,0.3,,cpu_rss_growth,0.5\n"
        "transformer,1,64,50,1.2,9.0,cpu_rss_growth,0.75\n"
        "transformer,64,256,7.0,2.0,12.5,cpu_rss_growth,3.0\n")
    rows = read_rows(tmp_path / "g.csv")
    assert rows[0]["tokens_per_s"] == 200.5 and rows[0]["batch_size"] == 1
    assert rows[0]["peak_mem_mb"] is None and read_rows(tmp_path / "missing.csv") == []
    table = format_generation_table(rows)
    assert "### Batch 1" in table and "### Batch 64" in table
    assert "| transformer | 50 tok/s, 9 MB peak, 0.75 MB cache |" in table


def test_plot_is_written(tmp_path):
    rows = [{"decoder": d, "batch_size": 1, "new_tokens": n, "tokens_per_s": t,
             "peak_mem_mb": 1.0, "cache_mb": c}
            for d, n, t, c in [("mamba", 64, 90, 0.1), ("mamba", 256, 95, 0.1),
                               ("transformer", 64, 80, 0.2), ("transformer", 256, 60, 0.8)]]
    assert generation_plot(rows, tmp_path / "g.png")
    assert (tmp_path / "g.png").read_bytes().startswith(b"\x89PNG")
    assert not generation_plot([], tmp_path / "none.png")


def test_unknown_report_is_named():
    with pytest.raises(ValueError, match="report must be one of"):
        ComparisonReport(report="kernels")

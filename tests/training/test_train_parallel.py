import torch

from selrope.training.parallel import available_cpus, run_parallel


def test_results_come_back_in_job_order_and_workers_split_the_cores():
    jobs = [(str, {"object": i}) for i in range(4)] + [(torch.get_num_threads, {})] * 2
    workers = min(2, available_cpus())
    results = run_parallel(jobs, max_workers=workers)  # one spawned pool: imports cost seconds
    assert results[:4] == ["0", "1", "2", "3"]
    expected_threads = max(1, available_cpus() // workers) if workers > 1 else None
    if expected_threads is not None:
        assert results[4:] == [expected_threads] * 2


def test_one_worker_runs_inline_in_order():
    jobs = [(str, {"object": i}) for i in range(5)]
    assert run_parallel(jobs, max_workers=1) == ["0", "1", "2", "3", "4"]
    assert run_parallel([]) == []

import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def file_size_limit():
    """``with limit(bytes):`` the system refuses to grow any file of this process past ``bytes`` (EFBIG, as a full
    disk refuses with ENOSPC). Lifted at the block's end: pytest's own output may be a file (CI's log), which it
    writes to before a test's teardown."""
    import contextlib
    import resource
    import signal

    if signal.getsignal(signal.SIGXFSZ) is not signal.SIG_IGN:  # (Python ignores it: a refused write is an OSError)
        pytest.skip("SIGXFSZ is not ignored: exceeding the limit would kill the process")
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)

    @contextlib.contextmanager
    def limit(size: int):
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, hard))
        try:
            yield
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))

    yield limit
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


@pytest.fixture
def full_size_images(monkeypatch):
    """Counts of the images read at full size (by ``rectgrad.zoo.read_image``, masks by ``rectgrad.data.mask_objects``)
    still alive, one per read."""
    import weakref

    from rectgrad import data, zoo

    alive, counts = set(), []

    def tracked(read):
        def reader(path, **options):
            image = read(path, **options)
            alive.add(id(image))
            weakref.finalize(image, alive.discard, id(image))
            counts.append(len(alive))
            return image
        return reader

    monkeypatch.setattr(zoo, "read_image", tracked(zoo.read_image))
    monkeypatch.setattr(data, "mask_objects", tracked(data.mask_objects))
    return counts

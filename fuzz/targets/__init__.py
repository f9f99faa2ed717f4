"""One module per fuzz target: ``setup(scratch)`` builds what every input shares and returns the
function that runs one input through the entry point the sync uses; ``BUDGET`` is the seconds
one input may take, ``MAX_LEN`` the longest input libFuzzer makes."""

SEP = b"\x00\xff\x00"  # separates the parts of a multi-part input (seeds are written with it)


def parts(data: bytes, n: int) -> list[bytes]:
    """``data`` cut at SEP into exactly ``n`` parts (missing ones empty)."""
    out = data.split(SEP, n - 1)
    return out + [b""] * (n - len(out))

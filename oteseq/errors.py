"""Named exceptions. Every message says what is wrong and how to fix it."""


class OteseqError(Exception):
    """Base class of every error raised on purpose by oteseq."""


class ShapeError(OteseqError, ValueError):
    """Tensors whose shapes do not fit together (e.g. K has d_in rows that W does not)."""


class NonFiniteError(OteseqError, ValueError):
    """A NaN or infinity in an input or in a computed update."""


class NotPSDError(OteseqError, ValueError):
    """A matrix that must be symmetric positive (semi-)definite is not."""


class SingularSystemError(OteseqError, ArithmeticError):
    """A linear system has no unique solution (add lam*C0, a ridge, or more keys)."""


class UnknownIdError(OteseqError, KeyError):
    """An id that names no active constraint or edit."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ConflictError(OteseqError):
    """An edit contradicts an active one and the policy is on_conflict='error'."""


class DeviceDtypeError(OteseqError, TypeError):
    """Tensors on different devices, or a dtype that cannot be used."""


class StateMismatchError(OteseqError):
    """A saved state belongs to another model, layer set or configuration."""


class UnsupportedArchitectureError(OteseqError):
    """A model whose architecture is not in oteseq.models.ARCHITECTURES."""


class RequestError(OteseqError, ValueError):
    """A malformed editing request (subject not in prompt, no '{}' slot, empty target...)."""


class OptionError(OteseqError, ValueError):
    """An option or argument outside its allowed values (unknown method, bad layer list...)."""


class OptionTypeError(OptionError, TypeError):
    """An argument of the wrong type (one template string where a list is expected...)."""


class LayerError(OptionError, IndexError):
    """A layer index the model does not have (the message gives the valid range)."""


class SchemaError(OteseqError, ValueError):
    """A data record that does not follow its dataset's schema (the message names the field)."""


class OfflineError(OteseqError, RuntimeError):
    """Something must be downloaded but cannot be; the message says what to fetch, and where."""


class ChecksumError(OteseqError, ValueError):
    """A downloaded or cached data file whose SHA-256 is not the pinned one; the message names
    the file, both digests and what to do."""


class CorruptStateError(StateMismatchError):
    """A saved state whose files fail their checksums or whose contents break an invariant
    (NaN, ``A·A⁻¹ ≠ I``, ``W`` not solving its constraints); the message names what is wrong."""

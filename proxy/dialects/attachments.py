"""Files a request carries encoded in a string (base64, or a ``data:`` URL): decoded so that a text file is
read as the prose of its message and any other file as binary content is."""

from __future__ import annotations

import base64
import binascii
import re
from urllib.parse import unquote_to_bytes

from proxy.dialects.base import readable_text
from proxy.dialects.locator import parse_locator
from proxy.exchange import Attachment, Fetch, Part, RequestView, Source

_DATA_URL = re.compile(r"data:([^,]*),", re.IGNORECASE)
_WHITESPACE = re.compile(r"\s+")
_URL_IGNORED = re.compile(r"[\t\n\r]")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
_BUCKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_BQ_TABLE = re.compile(r"bq://([a-z][a-z0-9-]{4,29})(?:\.(\w+)(?:\.([\w$-]+))?)?", re.IGNORECASE)
"""A BigQuery location: a project (by Google's rules for its id), with a dataset and a table or not."""
BUCKET_HOSTS = {"s3": "s3.amazonaws.com", "gs": "storage.googleapis.com"}
"""The host under which a cloud store serves each bucket as a virtual host of its own, by URI scheme."""
BIGQUERY_HOST = "bigquery.googleapis.com"
STORAGE_LOCATIONS = {
    ("gcssource", "uris"): ("gs", "batch input in Cloud Storage"),
    ("gcsdestination", "outputuriprefix"): ("gs", "batch output in Cloud Storage"),
    ("bigquerysource", "inputuri"): ("bq", "batch input in BigQuery"),
    ("bigquerydestination", "outputuri"): ("bq", "batch output in BigQuery"),
    ("supervisedtuningspec", "trainingdataseturi"): ("gs", "tuning data in Cloud Storage"),
    ("supervisedtuningspec", "validationdataseturi"): ("gs", "tuning data in Cloud Storage"),
    ("preferenceoptimizationspec", "trainingdataseturi"): ("gs", "tuning data in Cloud Storage"),
    ("preferenceoptimizationspec", "validationdataseturi"): ("gs", "tuning data in Cloud Storage"),
    ("partnermodeltuningspec", "trainingdataseturi"): ("gs", "tuning data in Cloud Storage"),
    ("partnermodeltuningspec", "validationdataseturi"): ("gs", "tuning data in Cloud Storage"),
    ("distillationspec", "promptdataseturi"): ("gs", "tuning data in Cloud Storage"),
    ("distillationspec", "trainingdataseturi"): ("gs", "tuning data in Cloud Storage"),
    ("distillationspec", "validationdataseturi"): ("gs", "tuning data in Cloud Storage"),
    ("distillationspec", "pipelinerootdirectory"): ("gs", "tuning output in Cloud Storage"),
    ("s3inputdataconfig", "s3uri"): ("s3", "batch input in S3"),
    ("s3outputdataconfig", "s3uri"): ("s3", "batch output in S3"),
    ("trainingdataconfig", "s3uri"): ("s3", "training data in S3"),
    ("invocationlogsource", "s3uri"): ("s3", "invocation logs in S3"),
    ("validators", "s3uri"): ("s3", "validation data in S3"),
    ("outputdataconfig", "s3uri"): ("s3", "job output in S3"),
    ("datasetlocation", "s3uri"): ("s3", "evaluation data in S3"),
    ("s3datasource", "s3uri"): ("s3", "model data in S3"),
}
"""Where a job the API runs later reads its input from or writes its output to, by the object and field
naming it (in any case, with or without underscores, as Vertex AI reads them): a Vertex AI batch
prediction job's ``inputConfig.gcsSource.uris`` or ``bigquerySource.inputUri`` and
``outputConfig.gcsDestination.outputUriPrefix`` or ``bigqueryDestination.outputUri``, a Vertex AI tuning
job's ``trainingDatasetUri`` and ``validationDatasetUri`` (supervised, preference, partner model and
distillation tuning alike, and a distillation's ``promptDatasetUri`` and output
``pipelineRootDirectory``); a Bedrock model invocation job's
``s3InputDataConfig.s3Uri`` and ``s3OutputDataConfig.s3Uri``, a model customization job's
``trainingDataConfig.s3Uri`` (or, distilling, the invocation logs it reads:
``trainingDataConfig.invocationLogsConfig.invocationLogSource.s3Uri``),
``validationDataConfig.validators[].s3Uri`` and ``outputDataConfig.s3Uri``
(an evaluation job's too), an evaluation job's ``datasetLocation.s3Uri``, a model import job's
``modelDataSource.s3DataSource.s3Uri``."""


JOB_LOCATIONS = {
    "outputuri": ("gs", "tuning output in Cloud Storage"),
    "custombasemodel": ("gs", "tuning base model in Cloud Storage"),
}
"""Where a Vertex AI tuning job of an open model writes its output (``outputUri``) and reads the weights it
tunes (``customBaseModel``), named at the top of the job's body: a location only where the value is a
Cloud Storage URI, the only kind the API takes there (the name alone is too common to stand for one)."""

_LOCATION_FIELDS = frozenset(field for _, field in STORAGE_LOCATIONS) | JOB_LOCATIONS.keys()


def decode_attachment(value: str) -> tuple[str, bytes] | str:
    """The bytes of a file given as ``value`` (a ``data:`` URL, in base64 or percent-encoded, or bare
    base64) with what stands before them in it (the URL's head, or nothing); or why it does not decode.
    Line breaks in base64 and missing padding are taken, as lenient decoders take them; any other
    character outside the alphabet is no base64."""
    head = ""
    data = value
    if (url := _DATA_URL.match(value)) is not None:
        head, data = url.group(0), value[url.end() :]
        if not url.group(1).lower().endswith(";base64"):
            return head, unquote_to_bytes(data)
    data = _WHITESPACE.sub("", data)
    data += "=" * (-len(data) % 4)
    try:
        return head, base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return "not valid base64"


def is_media(media_type: str | None) -> bool:
    """Images, audio and video: not read (what they hold is no text a rule reads, and they are large)."""
    return (media_type or "").lower().startswith(("image/", "audio/", "video/"))


def is_declared_text(media_type: str | None) -> bool:
    """A media type saying its content is text: ``text/*``, JSON (``application/json``, ``+json``)."""
    kind = (media_type or "").lower().partition(";")[0].strip()
    return kind.startswith("text/") or kind == "application/json" or kind.endswith("+json")


def declared_text(content: bytes) -> str:
    """What a file whose media type says it is text, but which does not read as text, says: as UTF-16
    where NULs fill one byte of most pairs (UTF-16 of ASCII without a byte order mark), else as UTF-8
    without its NULs, as a reader that takes it for the text it claims to be reads it."""
    odd, even = content[1::2].count(0), content[0::2].count(0)
    if max(odd, even) * 2 > len(content) // 2:
        return content.decode("utf-16-le" if odd > even else "utf-16-be", "replace")
    return content.replace(b"\x00", b"").decode("utf-8", "replace")


def read_as(source: Source) -> Source:
    """A file is content the model reads, as a retrieved document is (whoever attached it did not write
    it), or a tool's result where a tool returned it."""
    return source if source is Source.TOOL_RESULT else Source.RETRIEVED_DOCUMENT


def read_file_name(
    view: RequestView,
    name: object,
    where: str,
    source: Source,
    tool_name: str | None = None,
    call_id: str | None = None,
) -> None:
    """A file's name, which whoever named the file chose (a page's download, a tool's output) and the
    model reads with the file: read as the file's text is."""
    if isinstance(name, str):
        view.parts.append(Part(read_as(source), name, where, tool_name, call_id))


def text_file(value: object) -> tuple[str, str] | None:
    """The text of a file given encoded in ``value`` and what stands before its encoding there, where it
    decodes to text (``readable_text``); None where it does not decode, or to binary."""
    if not isinstance(value, str) or not value:
        return None
    decoded = decode_attachment(value)
    if isinstance(decoded, str):
        return None
    text = readable_text(decoded[1])
    return None if text is None else (decoded[0], text)


def binary_file(
    value: object, where: str, source: Source, media_type: str | None, *, declared: bool = False
) -> Attachment | None:
    """The file encoded in ``value`` as binary content read as ``source``, where it decodes to binary
    (with its text where ``media_type`` says it is text); where ``declared`` (its field holds a file in
    base64 by its API's definition) and it does not decode, the file as undecodable. None where it
    decodes to text, or is not declared a file and does not decode."""
    decoded = decode_attachment(value) if isinstance(value, str) and value else None
    if isinstance(decoded, str):
        return Attachment(where, b"", source, undecodable=decoded) if declared else None
    if decoded is None or readable_text(decoded[1]) is not None:
        return None
    content = decoded[1]
    return Attachment(
        where, content, source, declared_text(content) if is_declared_text(media_type) else None
    )


def read_file(
    value: object,
    where: str,
    source: Source,
    tool_name: str | None = None,
    tool_call_id: str | None = None,
    media_type: str | None = None,
) -> Part | Attachment | None:
    """The file encoded in ``value`` at ``where``, in a message from ``source``: a part where it reads as
    text, an attachment read as binary content where it does not (with its text too where ``media_type``,
    or its ``data:`` URL, says it is text), an undecodable attachment where it does not decode. A value
    that is no string (a file given by id or URL) holds nothing to read: None."""
    if not isinstance(value, str) or not value:
        return None
    decoded = decode_attachment(value)
    if isinstance(decoded, str):
        return Attachment(where, b"", read_as(source), undecodable=decoded)
    head, content = decoded
    text = readable_text(content)
    if text is not None:
        return Part(read_as(source), text, where, tool_name, tool_call_id, encoded=head)
    declared = is_declared_text(media_type or head[len("data:") : -1])
    return Attachment(where, content, read_as(source), declared_text(content) if declared else None)


def add_file(view: RequestView, file: Part | Attachment | None) -> None:
    """Adds a file a request carries (``read_file``) to ``view``: its text as a part, else the file."""
    if isinstance(file, Part):
        view.parts.append(file)
    elif file is not None:
        view.attachments.append(file)


def read_fetched(view: RequestView, value: object, where: str, what: str) -> bool:
    """Adds a file or image given by an ``http(s)`` URL at ``where`` to ``view`` as an address the API
    fetches for the agent, and says whether it was one. A ``data:`` URL is content, read where it is
    carried (``read_file``); a file id names what the provider already holds."""
    if not isinstance(value, str):
        return False
    address = _as_parsed(value)
    if not address.lower().startswith(("http://", "https://")):
        return False
    view.fetches.append(Fetch(where, address, what))
    return True


def _as_parsed(url: str) -> str:
    """``url`` as a WHATWG URL parser reads it: tabs and line breaks anywhere dropped, controls and spaces
    trimmed."""
    return _URL_IGNORED.sub("", url).strip("".join(map(chr, range(0x21))))


def read_file_uri(view: RequestView, value: object, where: str) -> None:
    """Adds a file the API fetches by a URI at ``where`` (Gemini's ``fileUri``) to ``view``: an ``http(s)``
    URL as ``read_fetched`` reads it, a ``gs://`` object at its bucket's address (``bucket_address``), a
    URI of any other scheme as an address no allowlist allows (the API reads no scheme egressguard does
    not). A name with no scheme (``files/abc``) is what the provider holds."""
    if not isinstance(value, str) or read_fetched(view, value, where, "file"):
        return
    uri = _as_parsed(value)
    if uri.lower().startswith("gs://"):
        view.fetches.append(Fetch(where, bucket_address(uri, "gs"), "file in Cloud Storage"))
    elif _SCHEME.match(uri) is not None or uri.startswith("/"):
        view.fetches.append(Fetch(where, "", "file"))


def bucket_address(uri: object, scheme: str) -> str:
    """The address a cloud store's ``scheme://bucket/key`` URI names (``s3``, ``gs``), as the agent would
    reach the object itself (the bucket's virtual host, ``BUCKET_HOSTS``), or a BigQuery ``bq://``
    project's dataset or table, at BigQuery's own API, which serves every project; none that an allowlist
    allows where it is no such URI or its bucket or project is no such name."""
    head = f"{scheme}://"
    if not isinstance(uri, str) or not uri.lower().startswith(head):
        return ""
    if scheme == "bq":
        table = _BQ_TABLE.fullmatch(uri)
        if table is None:
            return ""
        project, dataset, name = table.groups()
        steps = (("datasets", dataset), ("tables", name))
        path = "".join(f"/{step}/{value}" for step, value in steps if value)
        return f"https://{BIGQUERY_HOST}/bigquery/v2/projects/{project}{path}"
    bucket, _, key = uri[len(head) :].partition("/")
    if _BUCKET.fullmatch(bucket) is None:
        return ""
    return f"https://{bucket}.{BUCKET_HOSTS[scheme]}/{key}"


def domain_fetches(domains: object, tool_where: str, domains_key: str, what: str) -> list[Fetch]:
    """The addresses a web search or fetch tool the API runs at ``tool_where`` may reach: each domain its
    filter ``domains_key`` names, with its subdomains, which the APIs fetch from too; or, where it names
    none, whatever address the model picks."""
    if not isinstance(domains, list) or not domains:
        return [Fetch(tool_where, None, what)]
    fetches = []
    for index, domain in enumerate(domains):
        # A domain may carry a path; the scheme is never written.
        host = domain if isinstance(domain, str) else ""
        where = f"{tool_where}.{domains_key}[{index}]"
        fetches += [
            Fetch(where, f"https://{address}", f"{what} domain") for address in (host, f"subdomain.{host}")
        ]
    return fetches


def storage_location(where: str, value: str) -> Fetch | None:
    """The bucket a string at ``where`` names as where a job the API runs reads or writes
    (``STORAGE_LOCATIONS``, ``JOB_LOCATIONS``): the address the agent would reach it at itself
    (``bucket_address``)."""
    if where.rpartition(".")[2].partition("[")[0].replace("_", "").lower() not in _LOCATION_FIELDS:
        return None  # most locators go unparsed
    steps = parse_locator(where)
    names = [step.replace("_", "").lower() for step in steps if isinstance(step, str)]
    if len(steps) == len(names) == 1 and names[0] in JOB_LOCATIONS:
        location: tuple[str, str] | None = JOB_LOCATIONS[names[0]]
        if not _as_parsed(value).lower().startswith("gs://"):
            return None
    else:
        location = STORAGE_LOCATIONS.get((names[-2], names[-1])) if len(names) >= 2 else None
    if location is None:
        return None
    scheme, what = location
    return Fetch(where, bucket_address(_as_parsed(value), scheme), what)

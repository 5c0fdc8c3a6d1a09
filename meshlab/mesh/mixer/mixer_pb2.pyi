# ruff: noqa
# Generated from mixer.proto by meshlab.mesh.mixer.codegen: edit the .proto, then regenerate.
import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Attributes(_message.Message):
    __slots__ = ("strings", "int64s", "doubles", "bools", "durations")
    class StringsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class Int64sEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class DoublesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class BoolsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bool
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bool] = ...) -> None: ...
    class DurationsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _duration_pb2.Duration
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...
    STRINGS_FIELD_NUMBER: _ClassVar[int]
    INT64S_FIELD_NUMBER: _ClassVar[int]
    DOUBLES_FIELD_NUMBER: _ClassVar[int]
    BOOLS_FIELD_NUMBER: _ClassVar[int]
    DURATIONS_FIELD_NUMBER: _ClassVar[int]
    strings: _containers.ScalarMap[str, str]
    int64s: _containers.ScalarMap[str, int]
    doubles: _containers.ScalarMap[str, float]
    bools: _containers.ScalarMap[str, bool]
    durations: _containers.MessageMap[str, _duration_pb2.Duration]
    def __init__(self, strings: _Optional[_Mapping[str, str]] = ..., int64s: _Optional[_Mapping[str, int]] = ..., doubles: _Optional[_Mapping[str, float]] = ..., bools: _Optional[_Mapping[str, bool]] = ..., durations: _Optional[_Mapping[str, _duration_pb2.Duration]] = ...) -> None: ...

class CheckRequest(_message.Message):
    __slots__ = ("attributes", "deduplication_id", "quotas")
    class QuotaParams(_message.Message):
        __slots__ = ("amount", "best_effort")
        AMOUNT_FIELD_NUMBER: _ClassVar[int]
        BEST_EFFORT_FIELD_NUMBER: _ClassVar[int]
        amount: int
        best_effort: bool
        def __init__(self, amount: _Optional[int] = ..., best_effort: _Optional[bool] = ...) -> None: ...
    class QuotasEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: CheckRequest.QuotaParams
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[CheckRequest.QuotaParams, _Mapping]] = ...) -> None: ...
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    DEDUPLICATION_ID_FIELD_NUMBER: _ClassVar[int]
    QUOTAS_FIELD_NUMBER: _ClassVar[int]
    attributes: Attributes
    deduplication_id: str
    quotas: _containers.MessageMap[str, CheckRequest.QuotaParams]
    def __init__(self, attributes: _Optional[_Union[Attributes, _Mapping]] = ..., deduplication_id: _Optional[str] = ..., quotas: _Optional[_Mapping[str, CheckRequest.QuotaParams]] = ...) -> None: ...

class Status(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class CheckResponse(_message.Message):
    __slots__ = ("precondition", "quotas")
    class PreconditionResult(_message.Message):
        __slots__ = ("status", "valid_duration", "valid_use_count")
        STATUS_FIELD_NUMBER: _ClassVar[int]
        VALID_DURATION_FIELD_NUMBER: _ClassVar[int]
        VALID_USE_COUNT_FIELD_NUMBER: _ClassVar[int]
        status: Status
        valid_duration: _duration_pb2.Duration
        valid_use_count: int
        def __init__(self, status: _Optional[_Union[Status, _Mapping]] = ..., valid_duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., valid_use_count: _Optional[int] = ...) -> None: ...
    class QuotaResult(_message.Message):
        __slots__ = ("valid_duration", "granted_amount")
        VALID_DURATION_FIELD_NUMBER: _ClassVar[int]
        GRANTED_AMOUNT_FIELD_NUMBER: _ClassVar[int]
        valid_duration: _duration_pb2.Duration
        granted_amount: int
        def __init__(self, valid_duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., granted_amount: _Optional[int] = ...) -> None: ...
    class QuotasEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: CheckResponse.QuotaResult
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[CheckResponse.QuotaResult, _Mapping]] = ...) -> None: ...
    PRECONDITION_FIELD_NUMBER: _ClassVar[int]
    QUOTAS_FIELD_NUMBER: _ClassVar[int]
    precondition: CheckResponse.PreconditionResult
    quotas: _containers.MessageMap[str, CheckResponse.QuotaResult]
    def __init__(self, precondition: _Optional[_Union[CheckResponse.PreconditionResult, _Mapping]] = ..., quotas: _Optional[_Mapping[str, CheckResponse.QuotaResult]] = ...) -> None: ...

class ReportRequest(_message.Message):
    __slots__ = ("attributes",)
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    attributes: _containers.RepeatedCompositeFieldContainer[Attributes]
    def __init__(self, attributes: _Optional[_Iterable[_Union[Attributes, _Mapping]]] = ...) -> None: ...

class ReportResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

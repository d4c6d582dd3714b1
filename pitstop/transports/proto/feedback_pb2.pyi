from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FeedbackItem(_message.Message):
    __slots__ = ("id", "label", "value", "reward", "at", "row")
    ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    REWARD_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    ROW_FIELD_NUMBER: _ClassVar[int]
    id: str
    label: str
    value: float
    reward: float
    at: str
    row: int
    def __init__(self, id: _Optional[str] = ..., label: _Optional[str] = ..., value: _Optional[float] = ..., reward: _Optional[float] = ..., at: _Optional[str] = ..., row: _Optional[int] = ...) -> None: ...

class ModelFeedbackRequest(_message.Message):
    __slots__ = ("model_name", "items")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    items: _containers.RepeatedCompositeFieldContainer[FeedbackItem]
    def __init__(self, model_name: _Optional[str] = ..., items: _Optional[_Iterable[_Union[FeedbackItem, _Mapping]]] = ...) -> None: ...

class ModelFeedbackResponse(_message.Message):
    __slots__ = ("accepted", "replaced", "unknown", "expired", "unknown_ids", "expired_ids")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REPLACED_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_FIELD_NUMBER: _ClassVar[int]
    EXPIRED_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_IDS_FIELD_NUMBER: _ClassVar[int]
    EXPIRED_IDS_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    replaced: int
    unknown: int
    expired: int
    unknown_ids: _containers.RepeatedScalarFieldContainer[str]
    expired_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, accepted: _Optional[int] = ..., replaced: _Optional[int] = ..., unknown: _Optional[int] = ..., expired: _Optional[int] = ..., unknown_ids: _Optional[_Iterable[str]] = ..., expired_ids: _Optional[_Iterable[str]] = ...) -> None: ...

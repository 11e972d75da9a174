"""A gRPC client that has never seen nodewatch's .proto files: everything it
knows comes from the collector's server reflection (v1alpha, as grpcio-reflection
speaks it). Prints one JSON document for the calling test."""

import json
import sys

import grpc
from google.protobuf import descriptor_pb2, json_format, message_factory
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)


def message_class(descriptor):
    if hasattr(message_factory, "GetMessageClass"):
        return message_factory.GetMessageClass(descriptor)
    return message_factory.MessageFactory(descriptor.file.pool).GetPrototype(descriptor)


def comments_of(channel, symbol):
    """Leading comments of every element of the file defining `symbol`."""
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol)
    response = next(stub.ServerReflectionInfo(iter([request]), timeout=5))
    comments = []
    for raw in response.file_descriptor_response.file_descriptor_proto:
        fd = descriptor_pb2.FileDescriptorProto.FromString(raw)
        if fd.package != "nodewatch.v1":
            continue
        for loc in fd.source_code_info.location:
            if loc.leading_comments.strip():
                comments.append(loc.leading_comments.strip())
    return comments


def main():
    channel = grpc.insecure_channel(sys.argv[1])
    db = ProtoReflectionDescriptorDatabase(channel)
    pool = DescriptorPool(db)
    services = sorted(db.get_services())

    query = pool.FindServiceByName("nodewatch.v1.Query")
    list_hosts = query.methods_by_name["ListHosts"]
    request_cls = message_class(list_hosts.input_type)
    response_cls = message_class(list_hosts.output_type)
    call = channel.unary_unary(
        "/nodewatch.v1.Query/ListHosts",
        request_serializer=request_cls.SerializeToString,
        response_deserializer=response_cls.FromString,
    )
    response = call(request_cls(), timeout=5)

    summary = pool.FindMessageTypeByName("nodewatch.v1.HostSummary")
    print(
        json.dumps(
            {
                "services": services,
                "query_methods": sorted(query.methods_by_name),
                "host_summary_fields": [f.name for f in summary.fields],
                "list_hosts": json_format.MessageToDict(
                    response, preserving_proto_field_name=True
                ),
                "query_comments": comments_of(channel, "nodewatch.v1.Query"),
            }
        )
    )


if __name__ == "__main__":
    main()

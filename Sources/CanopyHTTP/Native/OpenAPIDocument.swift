import Foundation

/// The OpenAPI 3 document of the native API, served at `/api/v1/openapi.json`. A test calls every operation
/// it lists against the real router, so it cannot drift from what the server does.
public enum OpenAPIDocument {
    /// The document as JSON bytes.
    public static let json: [UInt8] = {
        let data = (try? JSONSerialization.data(withJSONObject: document, options: [.sortedKeys])) ?? Data()
        return [UInt8](data)
    }()

    static func ref(_ name: String) -> [String: Any] { ["$ref": "#/components/schemas/\(name)"] }
    static func jsonBody(_ schema: [String: Any]) -> [String: Any] { ["application/json": ["schema": schema]] }
    static func ok(_ schema: [String: Any], _ description: String = "OK") -> [String: Any] { ["description": description, "content": jsonBody(schema)] }
    nonisolated(unsafe) static let errors: [String: Any] = [
        "400": ok(ref("Error"), "Invalid request (the error names the offending field)"),
        "401": ok(ref("Error"), "Missing or invalid bearer token"),
        "404": ok(ref("Error"), "No such object (or not yours)"),
    ]
    static func op(_ id: String, _ summary: String, params: [[String: Any]] = [], body: [String: Any]? = nil, responses: [String: Any]) -> [String: Any] {
        var o: [String: Any] = ["operationId": id, "summary": summary, "responses": responses.merging(errors) { a, _ in a }]
        if !params.isEmpty { o["parameters"] = params }
        if let body { o["requestBody"] = ["required": true, "content": jsonBody(body)] }
        return o
    }
    static func path(_ name: String, _ schema: [String: Any] = ["type": "string"]) -> [String: Any] {
        ["name": name, "in": "path", "required": true, "schema": schema]
    }
    static func query(_ name: String, _ schema: [String: Any], _ description: String) -> [String: Any] {
        ["name": name, "in": "query", "required": false, "schema": schema, "description": description]
    }
    static func page(_ item: String) -> [String: Any] {
        ["type": "object", "required": ["items"], "properties": ["items": ["type": "array", "items": ref(item)], "nextCursor": ["type": "string"]]]
    }

    static let phases = ["Pending", "Starting", "Running", "Stopping", "Stopped", "Succeeded", "Failed", "Cancelled"]
    nonisolated(unsafe) static let str: [String: Any] = ["type": "string"]
    nonisolated(unsafe) static let int: [String: Any] = ["type": "integer"]
    nonisolated(unsafe) static let time: [String: Any] = ["type": "string", "format": "date-time"]
    nonisolated(unsafe) static let strMap: [String: Any] = ["type": "object", "additionalProperties": ["type": "string"]]

    nonisolated(unsafe) static let schemas: [String: Any] = [
        "Error": [
            "type": "object", "required": ["error"],
            "properties": ["error": ["type": "object", "required": ["code", "message"], "properties": ["code": str, "message": str, "field": str]]],
        ],
        "Resources": [
            "type": "object",
            "properties": [
                "cpu": ["oneOf": [["type": "number"], ["type": "string"]], "description": "CPUs per task: 2, 0.5 or \"500m\" (default 1)"],
                "memory": ["oneOf": [["type": "integer"], ["type": "string"]], "description": "memory per task: \"512Mi\", \"2Gi\" or bytes (default 1Gi)"],
                "gpus": ["type": "integer", "minimum": 0], "gpuModel": str,
            ],
        ],
        "CreateWorkload": [
            "type": "object", "required": ["command"], "additionalProperties": false,
            "properties": [
                "command": ["type": "array", "items": str, "minItems": 1], "name": str, "kind": ["type": "string", "enum": ["batch", "interactive"]],
                "queue": str, "priority": int, "image": str, "env": strMap, "workdir": str, "resources": ref("Resources"),
                "tasks": ["type": "integer", "minimum": 1], "maxDuration": ["oneOf": [["type": "integer"], ["type": "string"]]], "hold": ["type": "boolean"],
                "ports": ["type": "array", "items": int], "labels": strMap, "data": ref("DataStaging"),
            ],
        ],
        "DataStaging": [
            "type": "object", "description": "Files copied from the data store into task working directories before they start, and from task 0's back after it ends",
            "properties": [
                "inputs": [
                    "type": "array",
                    "items": ["type": "object", "required": ["source", "path"], "properties": ["source": str, "path": str]],
                ],
                "outputs": [
                    "type": "array",
                    "items": [
                        "type": "object", "required": ["path", "destination"],
                        "properties": ["path": str, "destination": str, "overwrite": ["type": "boolean", "default": false]],
                    ],
                ],
            ],
        ],
        "DataEntry": ["type": "object", "properties": ["path": str, "isDirectory": ["type": "boolean"], "size": int, "modifiedAt": time]],
        "AccessKey": [
            "type": "object",
            "properties": [
                "id": str, "accessKey": str, "secretKey": ["type": "string", "description": "only in the answer to its creation"], "user": str,
                "tenant": str, "description": str, "createdAt": time,
            ],
        ],
        "CreateAccessKey": ["type": "object", "properties": ["description": str]],
        "Reason": ["type": "object", "required": ["code", "message"], "properties": ["code": str, "message": str]],
        "Task": [
            "type": "object", "required": ["index", "phase", "gpus"],
            "properties": [
                "index": int, "phase": ["type": "string", "enum": phases], "node": str, "gpus": ["type": "array", "items": int], "backendID": str,
                "exitCode": int, "reason": ref("Reason"), "startedAt": time, "finishedAt": time,
            ],
        ],
        "WorkloadSpec": [
            "type": "object",
            "properties": [
                "name": str, "kind": str, "queue": str, "priority": int, "image": str, "command": ["type": "array", "items": str], "env": strMap,
                "workdir": str, "resources": ref("Resources"), "tasks": int, "maxDurationSeconds": int, "hold": ["type": "boolean"],
                "ports": ["type": "array", "items": int], "labels": strMap, "data": ref("DataStaging"),
            ],
        ],
        "Workload": [
            "type": "object", "required": ["id", "phase", "tenant", "owner", "seq", "spec", "createdAt", "tasks"],
            "properties": [
                "id": str, "phase": ["type": "string", "enum": phases], "reason": ref("Reason"), "queuePosition": int, "exitCode": int,
                "tenant": str, "owner": str, "seq": int, "spec": ref("WorkloadSpec"), "createdAt": time, "startedAt": time, "finishedAt": time,
                "stopRequestedAt": time, "tasks": ["type": "array", "items": ref("Task")], "version": int,
                "conditions": ["type": "array", "items": ref("Reason"), "description": "what holds besides the phase, e.g. BackendUnavailable"],
            ],
        ],
        "GPU": ["type": "object", "properties": ["index": int, "model": str, "memoryMiB": int, "uuid": str]],
        "NodeView": [
            "type": "object",
            "properties": [
                "node": [
                    "type": "object",
                    "properties": [
                        "name": str, "pool": str, "state": ["type": "string", "enum": ["Ready", "Draining", "Drained", "Down"]], "cpuMillis": int,
                        "memoryMiB": int, "gpus": ["type": "array", "items": ref("GPU")], "gpuSource": str, "backendState": str,
                    ],
                ],
                "allocatedCPUMillis": int, "allocatedMemoryMiB": int, "allocatedGPUs": ["type": "array", "items": int], "tasks": int,
            ],
        ],
        "Queue": ["type": "object", "properties": ["name": str, "priority": int, "description": str, "pool": str, "pending": int, "running": int]],
        "CreateQueue": ["type": "object", "required": ["name"], "properties": ["name": str, "priority": int, "description": str, "pool": str]],
        "Token": ["type": "object", "properties": ["id": str, "user": str, "tenant": str, "role": ["type": "string", "enum": ["admin", "user"]], "description": str, "token": str]],
        "CreateToken": ["type": "object", "required": ["user"], "properties": ["user": str, "tenant": str, "role": ["type": "string", "enum": ["admin", "user"]], "description": str]],
        "Principal": ["type": "object", "properties": ["user": str, "tenant": str, "role": str]],
    ]

    nonisolated(unsafe) static let id = path("id")

    nonisolated(unsafe) static let paths: [String: Any] = [
        "/workloads": [
            "post": op("createWorkload", "Submit a workload (durable once answered)", body: ref("CreateWorkload"), responses: ["201": ok(ref("Workload"), "Created")]),
            "get": op(
                "listWorkloads", "List workloads, newest first",
                params: [
                    query("limit", ["type": "integer", "minimum": 1, "maximum": 1000], "page size (default 100)"),
                    query("cursor", str, "nextCursor of the previous page"), query("queue", str, "only this queue"),
                    query("phase", str, "only these phases, comma-separated"), query("tenant", str, "admins: only this tenant"),
                ], responses: ["200": ok(page("Workload"))]),
        ],
        "/workloads/{id}": ["get": op("getWorkload", "Get a workload", params: [id], responses: ["200": ok(ref("Workload"))])],
        "/workloads/{id}/stop": [
            "post": op("stopWorkload", "Stop a workload (SIGTERM, then SIGKILL after the grace period)", params: [id], responses: ["200": ok(ref("Workload"))])
        ],
        "/workloads/{id}/release": [
            "post": op("releaseWorkload", "Release a held workload", params: [id], responses: ["200": ok(ref("Workload")), "409": ok(ref("Error"), "Not held")])
        ],
        "/workloads/{id}/tasks/{index}/logs": [
            "get": op(
                "getTaskLogs", "A task's output; with follow=true, streamed until the task ends",
                params: [
                    id, path("index", ["type": "integer", "minimum": 0]), query("stream", ["type": "string", "enum": ["stdout", "stderr"]], "default stdout"),
                    query("follow", ["type": "boolean"], "stream until the task ends"), query("offset", ["type": "integer", "minimum": 0], "start at this byte"),
                ], responses: ["200": ["description": "Log bytes", "content": ["text/plain": ["schema": ["type": "string"]]]]])
        ],
        "/nodes": ["get": op("listNodes", "Nodes with their capacity and allocations", responses: ["200": ok(page("NodeView"))])],
        "/queues": [
            "get": op("listQueues", "Queues with pending and running counts", responses: ["200": ok(page("Queue"))]),
            "post": op("createQueue", "Create or update a queue (admin)", body: ref("CreateQueue"), responses: ["201": ok(ref("Queue"), "Created")]),
        ],
        "/queues/{name}": ["delete": op("deleteQueue", "Delete an empty queue (admin)", params: [path("name")], responses: ["204": ["description": "Deleted"]])],
        "/tokens": [
            "get": op("listTokens", "API tokens (never their secrets)", responses: ["200": ok(page("Token"))]),
            "post": op("createToken", "Issue a token for a user in a tenant (admin); the secret is shown once", body: ref("CreateToken"), responses: ["201": ok(ref("Token"), "Created")]),
        ],
        "/tokens/{id}": ["delete": op("revokeToken", "Revoke a token", params: [id], responses: ["204": ["description": "Revoked"]])],
        "/keys": [
            "get": op("listAccessKeys", "Access keys for signed APIs (never their secrets)", responses: ["200": ok(page("AccessKey"))]),
            "post": [
                "operationId": "createAccessKey", "summary": "Create an access key and secret for the caller; the secret is shown once",
                "requestBody": ["required": false, "content": jsonBody(ref("CreateAccessKey"))],
                "responses": (["201": ok(ref("AccessKey"), "Created")] as [String: Any]).merging(errors) { a, _ in a },
            ],
        ],
        "/keys/{id}": ["delete": op("revokeAccessKey", "Revoke an access key", params: [id], responses: ["204": ["description": "Revoked"]])],
        "/data": [
            "get": op(
                "listData", "List a directory of the caller's data store (or stat a file)", params: [query("path", str, "default /")],
                responses: ["200": ok(page("DataEntry"))]),
            "delete": op(
                "deleteData", "Delete a file or a directory tree", params: [query("path", str, "required")], responses: ["204": ["description": "Deleted"]]),
        ],
        "/data/content": [
            "get": op(
                "getDataContent", "A file's bytes, streamed", params: [query("path", str, "required")],
                responses: ["200": ["description": "File bytes", "content": ["application/octet-stream": ["schema": ["type": "string", "format": "binary"]]]]]),
            "put": [
                "operationId": "putDataContent", "summary": "Write a file (streamed; parent directories are created; replaces an existing file)",
                "parameters": [query("path", str, "required")],
                "requestBody": ["required": true, "content": ["application/octet-stream": ["schema": ["type": "string", "format": "binary"]]]],
                "responses": (["201": ok(ref("DataEntry"), "Written")] as [String: Any]).merging(errors) { a, _ in a },
            ],
        ],
        "/whoami": ["get": op("whoami", "The caller's identity", responses: ["200": ok(ref("Principal"))])],
        "/openapi.json": ["get": ["operationId": "openapi", "summary": "This document", "security": [], "responses": ["200": ["description": "OpenAPI document"]]]],
    ]

    nonisolated(unsafe) static let document: [String: Any] = [
        "openapi": "3.0.3",
        "info": ["title": "Canopy native API", "version": "1.0.0", "description": "Batch and interactive workloads on CPUs, memory and GPUs."],
        "servers": [["url": "/api/v1"]],
        "security": [["bearer": []]],
        "paths": paths,
        "components": ["schemas": schemas, "securitySchemes": ["bearer": ["type": "http", "scheme": "bearer"]]],
    ]
}

import CanopyCore
import Foundation

/// The OpenAPI 3 document of the native API, served at `/api/v1/openapi.json`: the truth about what the server
/// takes and answers. A test calls every operation it lists against the real router, and schemathesis
/// (`scripts/schemathesis.sh`) checks a live server against it: every request it calls valid is accepted (or
/// refused for the state it names: a missing queue, a node too small), every invalid one refused, every answer's
/// status and body documented. Request objects are closed (`additionalProperties: false`) and no field is nullable.
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
    nonisolated(unsafe) static let forbidden: [String: Any] = ["403": ok(ref("Error"), "Not allowed: needs an admin token")]
    nonisolated(unsafe) static let tooLarge: [String: Any] = ["413": ok(ref("Error"), "Request body larger than 1 MiB")]
    static func op(_ id: String, _ summary: String, params: [[String: Any]] = [], body: [String: Any]? = nil, responses: [String: Any]) -> [String: Any] {
        var o: [String: Any] = ["operationId": id, "summary": summary, "responses": responses.merging(errors) { a, _ in a }]
        if !params.isEmpty { o["parameters"] = params }
        if let body {
            o["requestBody"] = ["required": true, "content": jsonBody(body)]
            o["responses"] = (o["responses"] as! [String: Any]).merging(tooLarge) { a, _ in a }
        }
        return o
    }
    static func path(_ name: String, _ schema: [String: Any] = ["type": "string"]) -> [String: Any] {
        ["name": name, "in": "path", "required": true, "schema": schema]
    }
    static func query(_ name: String, _ schema: [String: Any], _ description: String, required: Bool = false) -> [String: Any] {
        ["name": name, "in": "query", "required": required, "schema": schema, "description": description]
    }
    static func page(_ item: String) -> [String: Any] {
        ["type": "object", "required": ["items"], "properties": ["items": ["type": "array", "items": ref(item)], "nextCursor": ["type": "string"]]]
    }

    static let phases = ["Pending", "Starting", "Running", "Stopping", "Stopped", "Succeeded", "Failed", "Cancelled"]
    nonisolated(unsafe) static let str: [String: Any] = ["type": "string"]
    nonisolated(unsafe) static let int: [String: Any] = ["type": "integer"]
    nonisolated(unsafe) static let time: [String: Any] = ["type": "string", "format": "date-time"]
    nonisolated(unsafe) static let strMap: [String: Any] = ["type": "object", "additionalProperties": ["type": "string"]]
    /// Names of queues, users and tenants.
    nonisolated(unsafe) static let name: [String: Any] = ["type": "string", "pattern": "^[a-z0-9_-]{1,63}$"]
    /// A name in a data path: not empty, not `.` or `..`, no `/` or NUL.
    static let pathName = #"(?:[^/\x00.][^/\x00]*|\.[^/\x00.][^/\x00]*|\.\.[^/\x00]+)"#
    /// A path in the data store: no `..` name, no NUL (the byte limits, 255 a name and 4096 in all, JSON Schema cannot state).
    nonisolated(unsafe) static let dataPath: [String: Any] = [
        "type": "string", "pattern": "^(?:\(pathName)|\\.?)(?:/(?:\(pathName)|\\.?))*$",
        "description": "a path in the caller's data store such as /user/me/dir (default /); names of at most 255 bytes, no \"..\", no NUL, 4096 bytes in all",
    ]
    /// A path in the data store that names something below the root.
    nonisolated(unsafe) static let dataFile: [String: Any] = [
        "type": "string", "pattern": "^(?:\\.?/)*\(pathName)(?:/(?:\(pathName)|\\.?))*$",
        "description": "a path in the caller's data store below / such as /user/me/file; names of at most 255 bytes, no \"..\", no NUL, 4096 bytes in all",
    ]
    static func closed(_ properties: [String: Any], required: [String] = [], _ extra: [String: Any] = [:]) -> [String: Any] {
        var o: [String: Any] = ["type": "object", "additionalProperties": false, "properties": properties]
        if !required.isEmpty { o["required"] = required }
        return o.merging(extra) { a, _ in a }
    }

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
        "ResourcesRequest": closed(
            [
                "cpu": [
                    "oneOf": [["type": "number", "exclusiveMinimum": true, "minimum": 0], ["type": "string"]],
                    "description": "CPUs per task: 2, 0.5 or \"500m\" (default 1)",
                ],
                "memory": [
                    "oneOf": [["type": "integer", "minimum": 1], ["type": "string"]],
                    "description": "memory per task: \"512Mi\", \"2Gi\" or bytes (default 1Gi)",
                ],
                "gpus": ["type": "integer", "minimum": 0, "maximum": 1024], "gpuModel": ["type": "string", "maxLength": 128],
            ], ["description": "What each task needs; a request no node could ever satisfy is refused (400 Unschedulable)"]),
        "CreateWorkload": closed(
            [
                "command": ["type": "array", "items": ["type": "string", "maxLength": 131_072], "minItems": 1, "maxItems": 4096],
                "name": ["type": "string", "maxLength": 253], "kind": ["type": "string", "enum": ["batch", "interactive"]],
                "queue": ["type": "string", "description": "an existing queue (default: default)"],
                "priority": ["type": "integer", "minimum": -1_000_000, "maximum": 1_000_000], "image": str,
                "env": [
                    "type": "object", "additionalProperties": ["type": "string"], "description": "names: letters, digits and _, not starting with a digit",
                ],
                "workdir": ["type": "string", "maxLength": 4096], "resources": ref("ResourcesRequest"),
                "tasks": ["type": "integer", "minimum": 1, "maximum": 1024],
                "maxDuration": [
                    "oneOf": [["type": "integer", "minimum": 1, "maximum": 31_622_400], ["type": "string"]],
                    "description": "seconds, or \"90s\", \"15m\", \"1h30m\", at most 366 days",
                ],
                "hold": ["type": "boolean"],
                "ports": [
                    "type": "array", "maxItems": 32,
                    "items": [
                        "oneOf": [
                            ["type": "integer", "minimum": 1, "maximum": 65535],
                            closed(
                                ["port": ["type": "integer", "minimum": 1, "maximum": 65535], "protocol": ["type": "string", "enum": ["http", "tcp"]]],
                                required: ["port"]),
                        ]
                    ],
                    "description": "ports each task serves; a bare number is HTTP",
                ],
                "labels": strMap,
                "data": ref("DataStagingRequest"),
                "mounts": [
                    "type": "array", "maxItems": 32, "items": ref("MountRequest"),
                    "description": "paths mounted into each task's container; needs an image that runs as a container",
                ],
                "lease": [
                    "oneOf": [["type": "integer", "minimum": 60, "maximum": Lease.maxSeconds], ["type": "string"]],
                    "description": "interactive workloads only: seconds, \"2h\", or \"unlimited\" (where the queue has no cap); default: the queue's",
                ],
                "app": [
                    "type": "string", "maxLength": 64,
                    "description":
                        "an app to run (GET /apps): its command, image and HTTP port unless given; the workload is interactive unless kind says otherwise",
                ],
                "idleProbe": [
                    "type": "array", "items": ["type": "string", "pattern": "^[^\\u0000]*$", "maxLength": 1024], "minItems": 1, "maxItems": 64,
                    "description":
                        "interactive workloads in a queue with an idle timeout: a command run in task 0 at each idle sample (the first word not empty); exit status 0 counts as activity",
                ],
            ], required: []),
        "LeaseRequest": closed(
            [
                "extend": [
                    "oneOf": [["type": "integer", "minimum": 60, "maximum": Lease.maxSeconds], ["type": "string"]],
                    "description": "how much longer: seconds or \"1h\", the end at most 10 years from now",
                ],
                "until": ["type": "string", "format": "date-time", "description": "a new end, at least a minute from now"],
                "unlimited": ["type": "boolean", "description": "no end, where the queue has no cap"],
            ]),
        "MountRequest": closed(
            [
                "source": ["type": "string", "description": "data:/PATH (your data store; must exist) or host:/PATH (below a path an admin allowed)"],
                "target": [
                    "type": "string",
                    "description":
                        "an absolute path in the container: not /, not /workspace itself, not a system directory (/proc, /sys, /dev, /etc, /usr, /lib*, ...)",
                ],
                "readOnly": ["type": "boolean", "default": false],
            ], required: ["source", "target"]),
        "Mount": ["type": "object", "properties": ["source": str, "target": str, "readOnly": ["type": "boolean"]]],
        "Image": [
            "type": "object", "required": ["name", "public", "engineReference", "engineID", "sizeBytes", "source", "createdBy", "createdAt"],
            "properties": [
                "name": ["type": "string", "description": "the catalog name, NAME:TAG"], "public": ["type": "boolean"],
                "tenant": ["type": "string", "description": "the tenant of a private image"], "engineReference": str, "engineID": str,
                "sizeBytes": int, "source": ["type": "string", "enum": ["import", "load", "pull"]], "origin": str, "createdBy": str, "createdAt": time,
            ],
        ],
        "PullImage": closed(
            [
                "reference": ["type": "string", "minLength": 1, "maxLength": 255, "description": "what to pull, e.g. busybox:1.36 or ghcr.io/org/app:v2"],
                "name": ["type": "string", "description": "the catalog name, NAME:TAG (default: the reference's name and tag, without the registry)"],
                "public": ["type": "boolean", "default": false, "description": "a public image (admins)"],
            ], required: ["reference"]),
        "DataStaging": [
            "type": "object",
            "description": "Files copied from the data store into task working directories before they start, and from task 0's back after it ends",
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
        "DataStagingRequest": closed(
            [
                "inputs": ["type": "array", "maxItems": 64, "items": closed(["source": str, "path": str], required: ["source", "path"])],
                "outputs": [
                    "type": "array", "maxItems": 64,
                    "items": closed(
                        ["path": str, "destination": str, "overwrite": ["type": "boolean", "default": false]], required: ["path", "destination"]),
                ],
            ],
            ["description": "Files copied from the data store into task working directories before they start, and from task 0's back after it ends"]),
        "DataEntry": ["type": "object", "properties": ["path": str, "isDirectory": ["type": "boolean"], "size": int, "modifiedAt": time]],
        "AccessKey": [
            "type": "object",
            "properties": [
                "id": str, "accessKey": str, "secretKey": ["type": "string", "description": "only in the answer to its creation"], "user": str,
                "tenant": str, "description": str, "createdAt": time,
            ],
        ],
        "SSHKey": [
            "type": "object", "required": ["id", "fingerprint", "user", "tenant", "type", "publicKey", "name", "createdAt"],
            "properties": [
                "id": ["type": "string", "description": "the SHA-256 fingerprint in URL-safe base64"], "fingerprint": str, "user": str, "tenant": str,
                "role": ["type": "string", "enum": ["admin", "user"]], "type": str, "publicKey": str, "name": str, "createdAt": time,
            ],
        ],
        "AddSSHKey": closed(
            [
                "publicKey": ["type": "string", "maxLength": 16384, "description": "one OpenSSH public key line: ssh-ed25519 or ecdsa-sha2-nistp256/384/521"],
                "name": ["type": "string", "maxLength": 200],
            ], required: ["publicKey"]),
        "CreateAccessKey": closed(["description": ["type": "string", "maxLength": 256, "description": "at most 256 bytes of UTF-8"]]),
        "Reason": ["type": "object", "required": ["code", "message"], "properties": ["code": str, "message": str]],
        "Task": [
            "type": "object", "required": ["index", "phase", "gpus"],
            "properties": [
                "index": int, "phase": ["type": "string", "enum": phases], "node": str, "gpus": ["type": "array", "items": int], "backendID": str,
                "exitCode": int, "reason": ref("Reason"), "startedAt": time, "finishedAt": time,
                "endpoints": ["type": "array", "items": ref("Endpoint"), "description": "the declared ports, with access URLs while the task runs"],
            ],
        ],
        "WorkloadSpec": [
            "type": "object",
            "properties": [
                "name": str, "kind": str, "queue": str, "priority": int, "image": str, "command": ["type": "array", "items": str], "env": strMap,
                "workdir": str, "resources": ref("Resources"), "tasks": int, "maxDurationSeconds": int, "hold": ["type": "boolean"],
                "ports": ["type": "array", "items": ref("PortSpec")], "labels": strMap, "data": ref("DataStaging"),
                "mounts": ["type": "array", "items": ref("Mount")],
                "lease": ["oneOf": [int, str], "description": "seconds from each start, or \"unlimited\""], "app": str,
                "idleProbe": ["type": "array", "items": str],
            ],
        ],
        "Workload": [
            "type": "object", "required": ["id", "phase", "tenant", "owner", "seq", "spec", "createdAt", "tasks"],
            "properties": [
                "id": str, "phase": ["type": "string", "enum": phases], "reason": ref("Reason"), "queuePosition": int, "exitCode": int,
                "tenant": str, "owner": str, "seq": int, "spec": ref("WorkloadSpec"), "createdAt": time, "startedAt": time, "finishedAt": time,
                "stopRequestedAt": time, "tasks": ["type": "array", "items": ref("Task")], "version": int,
                "conditions": ["type": "array", "items": ref("Reason"), "description": "what holds besides the phase, e.g. BackendUnavailable"],
                "imageReference": ["type": "string", "description": "the engine's content id (sha256:...) of spec.image, resolved in the catalog at submit"],
                "leaseExpiresAt": time, "leaseWarned": ["type": "boolean"], "restarts": int, "lastActivityAt": time, "lastActivitySource": str,
                "idleWarned": ["type": "boolean"],
            ],
        ],
        "App": [
            "type": "object",
            "properties": [
                "name": str, "command": ["type": "array", "items": str], "port": int, "image": str, "tokenEnv": str, "tokenHeader": str, "description": str,
            ],
        ],
        "PortSpec": ["type": "object", "properties": ["port": int, "protocol": ["type": "string", "enum": ["http", "tcp"]]]],
        "Endpoint": [
            "type": "object",
            "properties": [
                "port": int, "protocol": ["type": "string", "enum": ["http", "tcp"]],
                "url": ["type": "string", "description": "the access URL on the proxy (HTTP ports)"],
            ],
        ],
        "GPU": ["type": "object", "properties": ["index": int, "model": str, "memoryMiB": int, "uuid": str, "minor": int]],
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
        "Queue": [
            "type": "object",
            "properties": [
                "name": str, "priority": int, "description": str, "pool": str, "allowRoot": ["type": "boolean"], "pending": int, "running": int,
                "defaultLeaseSeconds": int, "maxLeaseSeconds": int, "idleTimeoutSeconds": int,
            ],
        ],
        "CreateQueue": closed(
            [
                "name": name, "priority": ["type": "integer", "minimum": -1_000_000, "maximum": 1_000_000],
                "description": ["type": "string", "maxLength": 1024],
                "pool": ["type": "string", "description": "an existing pool (400 otherwise)"],
                "allowRoot": ["type": "boolean", "default": false, "description": "containers of the queue's workloads may run as root"],
                "defaultLease": [
                    "oneOf": [["type": "integer", "minimum": 60], ["type": "string"]],
                    "description": "interactive workloads' lease when they ask for none (12h)",
                ],
                "maxLease": [
                    "oneOf": [["type": "integer", "minimum": 60], ["type": "string"]], "description": "the longest lease from now (default: no cap)",
                ],
                "idleTimeout": [
                    "oneOf": [["type": "integer", "minimum": 10], ["type": "string"]],
                    "description": "interactive workloads with no activity this long are stopped (IdleTimeout); default never",
                ],
            ], required: ["name"]),
        "Token": [
            "type": "object",
            "properties": ["id": str, "user": str, "tenant": str, "role": ["type": "string", "enum": ["admin", "user"]], "description": str, "token": str],
        ],
        "CreateToken": closed(
            ["user": name, "tenant": name, "role": ["type": "string", "enum": ["admin", "user"]], "description": ["type": "string", "maxLength": 1024]],
            required: ["user", "tenant"]),
        "User": [
            "type": "object",
            "properties": [
                "user": str, "tenant": str, "roles": ["type": "array", "items": ["type": "string", "enum": ["admin", "user"]]], "tokens": int, "keys": int,
                "password": ["type": "boolean"],
            ],
        ],
        "CreateUser": closed(
            [
                "user": name, "tenant": name, "role": ["type": "string", "enum": ["admin", "user"]],
                "password": ["type": "string", "minLength": 8, "maxLength": 1024],
            ], required: ["user", "tenant", "password"]),
        "SetPassword": closed(
            ["password": ["type": "string", "minLength": 8, "maxLength": 1024], "currentPassword": ["type": "string", "maxLength": 1024]],
            required: ["password"]),
        "Tenant": ["type": "object", "properties": ["name": str, "id": ["type": "string", "pattern": "^[0-9a-f]{32}$"]]],
        "UserRemoval": ["type": "object", "properties": ["user": str, "tenant": str, "tokensRevoked": int, "keysRevoked": int]],
        "Principal": ["type": "object", "properties": ["user": str, "tenant": str, "role": ["type": "string", "enum": ["admin", "user"]]]],
    ]

    nonisolated(unsafe) static let id = path("id")
    /// An image's name in a path (URL-encoded: busybox%3A1.36), and which catalog to look in.
    nonisolated(unsafe) static let imageParams: [[String: Any]] = [
        path("name", ["type": "string", "minLength": 1]),
        query("public", ["type": "boolean"], "true: the public image of that name; false: your tenant's (default: yours, else the public one)"),
        query("tenant", name, "admins: that tenant's image"),
    ]

    /// The answers of an upload operation.
    static func uploadResponses(_ created: [String: Any]) -> [String: Any] {
        let own: [String: Any] = [
            "201": ok(created, "Added"), "409": ok(ref("Error"), "No container engine on this server, or the name is taken"),
            "413": ok(ref("Error"), "Larger than 8 GiB"), "503": ok(ref("Error"), "The server is shutting down, or its disk is full; retry"),
        ]
        return own.merging(forbidden) { a, _ in a }.merging(errors) { a, _ in a }
    }

    /// An operation whose body is a file, streamed: `?name=` and `?public=`.
    static func upload(_ id: String, _ summary: String, nameRequired: Bool, created: [String: Any]) -> [String: Any] {
        [
            "operationId": id, "summary": summary,
            "parameters": [
                query(
                    "name", ["type": "string", "minLength": 1], "the catalog name, NAME:TAG" + (nameRequired ? "" : " (default: the names the archive gives)"),
                    required: nameRequired),
                query("public", ["type": "boolean"], "a public image (admins; default false)"),
            ],
            "requestBody": ["required": true, "content": ["application/octet-stream": ["schema": ["type": "string", "format": "binary"]]]],
            "responses": uploadResponses(created),
        ]
    }

    nonisolated(unsafe) static let paths: [String: Any] = [
        "/workloads": [
            "post": op(
                "createWorkload", "Submit a workload (durable once answered)", body: ref("CreateWorkload"), responses: ["201": ok(ref("Workload"), "Created")]),
            "get": op(
                "listWorkloads", "List workloads, newest first",
                params: [
                    query("limit", ["type": "integer", "minimum": 1, "maximum": 1000], "page size (default 100)"),
                    query("cursor", ["type": "string", "pattern": "^([1-9][0-9]{0,17})?$"], "nextCursor of the previous page (empty: the first page)"),
                    query("queue", str, "only this queue"),
                    [
                        "name": "phase", "in": "query", "required": false, "style": "form", "explode": false,
                        "schema": ["type": "array", "minItems": 1, "items": ["type": "string", "enum": phases]],
                        "description": "only these phases, comma-separated",
                    ],
                    query("tenant", str, "admins: only this tenant (ignored for users)"),
                ], responses: ["200": ok(page("Workload"))]),
        ],
        "/workloads/{id}": [
            "get": op("getWorkload", "Get a workload", params: [id], responses: ["200": ok(ref("Workload"))]),
            "delete": op(
                "deleteWorkload", "Delete a stopped or finished workload with its files (logs, working directories); its owner or an admin", params: [id],
                responses: [
                    "204": ["description": "Deleted"], "403": ok(ref("Error"), "Not the workload's owner (nor an admin)"),
                    "409": ok(ref("Error"), "It can still run: stop it first"),
                ]),
        ],
        "/workloads/{id}/stop": [
            "post": op(
                "stopWorkload", "Stop a workload (SIGTERM, then SIGKILL after the grace period); its owner or an admin", params: [id],
                responses: ["200": ok(ref("Workload")), "403": ok(ref("Error"), "Not the workload's owner (nor an admin)")])
        ],
        "/workloads/{id}/release": [
            "post": op(
                "releaseWorkload", "Release a held workload; its owner or an admin", params: [id],
                responses: [
                    "200": ok(ref("Workload")), "403": ok(ref("Error"), "Not the workload's owner (nor an admin)"), "409": ok(ref("Error"), "Not held"),
                ])
        ],
        "/workloads/{id}/restart": [
            "post": op(
                "restartWorkload", "Start a stopped interactive workload again, its files kept; its owner or an admin", params: [id],
                responses: [
                    "200": ok(ref("Workload")), "403": ok(ref("Error"), "Not the workload's owner (nor an admin)"),
                    "409": ok(ref("Error"), "Not a stopped interactive workload"),
                ])
        ],
        "/workloads/{id}/lease": [
            "post": op(
                "setLease", "Extend or change an interactive workload's lease, within its queue's cap; its owner or an admin", params: [id],
                body: ref("LeaseRequest"),
                responses: [
                    "200": ok(ref("Workload")), "403": ok(ref("Error"), "Not the workload's owner (nor an admin)"),
                    "409": ok(ref("Error"), "A batch workload, or one that ended"),
                ])
        ],
        "/apps": [
            "get": op(
                "listApps", "The apps workloads may run by name (\"app\" in a workload): the built-in jupyter and those an admin configured",
                responses: ["200": ok(["type": "object", "properties": ["items": ["type": "array", "items": ref("App")], "nextCursor": str]])])
        ],
        "/workloads/{id}/open": [
            "post": op(
                "openWorkload", "A one-time login link (2 minutes) to a task's HTTP port on the proxy, for a browser; its owner or an admin", params: [id],
                body: closed([
                    "task": ["type": "integer", "minimum": 0, "maximum": 1023, "description": "default 0"],
                    "port": ["type": "integer", "minimum": 1, "maximum": 65535, "description": "an HTTP port the workload declares (default: its first)"],
                ]),
                responses: [
                    "200": ok(closed(["url": ["type": "string"], "expiresAt": time], required: ["url", "expiresAt"])),
                    "403": ok(ref("Error"), "Not the workload's owner (nor an admin)"),
                    "409": ok(ref("Error"), "The task is not running"),
                    "503": ok(ref("Error"), "This server has no proxy"),
                ])
        ],
        "/workloads/{id}/exec": [
            "get": op(
                "execWorkload",
                "Run a command inside a running task, over a WebSocket (Connection: Upgrade, Upgrade: websocket; subprotocol v5.channel.k8s.io): binary messages whose first byte is the channel, 0 stdin, 1 stdout, 2 stderr, 3 the status with exitCode at the end, 4 a resize {\"Width\", \"Height\"}, 255 then 0 the end of stdin. Its owner or an admin. Without an upgrade, the answer is the error that would refuse it, or 400 naming Upgrade",
                params: [
                    id,
                    query(
                        "command",
                        ["type": "array", "items": ["type": "string", "pattern": "^[^\\u0000]*$", "maxLength": 128], "minItems": 1, "maxItems": 32],
                        "the command and its arguments, one per parameter (the first one not empty, no NUL). The request line, query included, must stay under 64 KiB (the HTTP parser's limit: a longer one is a 400 without a body); the schema's bounds keep any request within it. A longer script goes on standard input: command=sh, stdin=true",
                        required: true),
                    query("task", ["type": "integer", "minimum": 0, "maximum": 1023], "default 0"),
                    query("stdin", ["type": "boolean"], "the client sends standard input (otherwise it is closed at once)"),
                    query("tty", ["type": "boolean"], "give the command a pseudo-terminal"),
                    query("rows", ["type": "integer", "minimum": 1, "maximum": 10000], "the terminal's rows at start"),
                    query("cols", ["type": "integer", "minimum": 1, "maximum": 10000], "the terminal's columns at start"),
                ],
                responses: [
                    "101": ["description": "Switching to the WebSocket"],
                    "403": ok(ref("Error"), "Not the workload's owner (nor an admin)"),
                    "409": ok(ref("Error"), "The task is not running, or its runtime cannot exec"),
                ])
        ],
        "/workloads/{id}/tasks/{index}/logs": [
            "get": op(
                "getTaskLogs", "A task's output; with follow=true, streamed until the task ends",
                params: [
                    id, path("index", ["type": "integer", "minimum": 0, "maximum": 1023]),
                    query("stream", ["type": "string", "enum": ["stdout", "stderr"]], "default stdout"),
                    query("follow", ["type": "boolean"], "stream until the task ends"),
                    query("offset", ["type": "integer", "minimum": 0, "maximum": 9_223_372_036_854_775_807], "start at this byte"),
                ],
                responses: [
                    "200": ["description": "Log bytes", "content": ["text/plain": ["schema": ["type": "string"]]]],
                    "404": ok(ref("Error"), "No such workload (or not yours), or no task with that index"),
                ])
        ],
        "/nodes": ["get": op("listNodes", "Nodes with their capacity and allocations", responses: ["200": ok(page("NodeView"))])],
        "/queues": [
            "get": op("listQueues", "Queues with pending and running counts", responses: ["200": ok(page("Queue"))]),
            "post": op(
                "createQueue", "Create or update a queue (admin)", body: ref("CreateQueue"),
                responses: (["201": ok(ref("Queue"), "Created")] as [String: Any]).merging(forbidden) { a, _ in a }),
        ],
        "/queues/{name}": [
            "delete": op(
                "deleteQueue", "Delete an empty queue (admin)", params: [path("name")],
                responses: (["204": ["description": "Deleted"], "409": ok(ref("Error"), "The default queue, or a queue with unfinished workloads")]
                    as [String: Any])
                    .merging(forbidden) { a, _ in a })
        ],
        "/tokens": [
            "get": op("listTokens", "API tokens (never their secrets)", responses: ["200": ok(page("Token"))]),
            "post": op(
                "createToken", "Issue a token for a user in a tenant (admin); the secret is shown once", body: ref("CreateToken"),
                responses: (["201": ok(ref("Token"), "Created")] as [String: Any]).merging(forbidden) { a, _ in a }),
        ],
        "/tokens/{id}": [
            "delete": op(
                "revokeToken", "Revoke a token: your own, or any for an admin (another user's looks missing)", params: [id],
                responses: ["204": ["description": "Revoked"], "409": ok(ref("Error"), "The last admin token: issue another admin token first")])
        ],
        "/users": [
            "get": op(
                "listUsers", "Users who hold tokens or access keys (admin)",
                responses: (["200": ok(page("User"))] as [String: Any]).merging(forbidden) { a, _ in a }),
            "post": op(
                "createUser", "Create a user who signs in with a password (admin); kept only as a slow salted hash", body: ref("CreateUser"),
                responses: (["201": ok(ref("User"), "Created"), "409": ok(ref("Error"), "The user already has a password")] as [String: Any])
                    .merging(forbidden) { a, _ in a }),
        ],
        "/users/{tenant}/{user}/password": [
            "put": op(
                "setPassword", "Set a user's password: an admin anyone's, a user their own (with currentPassword)",
                params: [path("tenant", name), path("user", name)], body: ref("SetPassword"),
                responses: [
                    "204": ["description": "Changed"], "403": ok(ref("Error"), "The current password does not match"),
                    "429": ok(ref("Error"), "Too many failed tries from this address or for this user"),
                ])
        ],
        "/tenants": [
            "get": op("listTenants", "Tenants with their organisation ids (an admin: all; a user: their own)", responses: ["200": ok(page("Tenant"))])
        ],
        "/users/{tenant}/{user}": [
            "delete": op(
                "removeUser", "Remove a user: revoke every token and access key they hold (admin); their workloads are left alone",
                params: [path("tenant", name), path("user", name)],
                responses: (["200": ok(ref("UserRemoval")), "409": ok(ref("Error"), "That would revoke the last admin token")] as [String: Any])
                    .merging(forbidden) { a, _ in a })
        ],
        "/keys": [
            "get": op("listAccessKeys", "Access keys for signed APIs (never their secrets)", responses: ["200": ok(page("AccessKey"))]),
            "post": [
                "operationId": "createAccessKey", "summary": "Create an access key and secret for the caller; the secret is shown once",
                "requestBody": ["required": false, "content": jsonBody(ref("CreateAccessKey"))],
                "responses": (["201": ok(ref("AccessKey"), "Created")] as [String: Any]).merging(errors) { a, _ in a }.merging(tooLarge) { a, _ in a },
            ],
        ],
        "/keys/{id}": [
            "delete": op("revokeAccessKey", "Revoke an access key: your own, or any for an admin", params: [id], responses: ["204": ["description": "Revoked"]])
        ],
        "/ssh-keys": [
            "get": op("listSSHKeys", "The caller's SSH public keys (an admin's: everyone's)", responses: ["200": ok(page("SSHKey"))]),
            "post": op(
                "addSSHKey", "Register an SSH public key for the caller (Canopy's SSH server logs them in by it)", body: ref("AddSSHKey"),
                responses: [
                    "201": ok(ref("SSHKey"), "Registered (or already the caller's)"),
                    "409": ok(ref("Error"), "The key is registered to another user"), "429": ok(ref("Error"), "The caller has 50 keys"),
                ]),
        ],
        "/ssh-keys/{id}": [
            "delete": op("removeSSHKey", "Remove an SSH key: your own, or any for an admin", params: [id], responses: ["204": ["description": "Removed"]])
        ],
        "/ssh": [
            "get": op(
                "getSSHServer", "Where Canopy's SSH server listens and its host key (404 when it runs none)",
                responses: ["200": ok(closed(["port": ["type": "integer"], "hostKey": str], required: ["port", "hostKey"]))])
        ],
        "/data": [
            "get": op(
                "listData", "List a directory of the caller's data store (or stat a file)", params: [query("path", dataPath, "default /")],
                responses: ["200": ok(page("DataEntry"))]),
            "delete": op(
                "deleteData", "Delete a file or a directory tree", params: [query("path", dataFile, "the file or directory", required: true)],
                responses: ["204": ["description": "Deleted"]]),
        ],
        "/data/content": [
            "get": op(
                "getDataContent", "A file's bytes, streamed", params: [query("path", dataFile, "the file", required: true)],
                responses: [
                    "200": ["description": "File bytes", "content": ["application/octet-stream": ["schema": ["type": "string", "format": "binary"]]]],
                    "409": ok(ref("Error"), "A directory, not a file"),
                ]),
            "put": [
                "operationId": "putDataContent", "summary": "Write a file (streamed; parent directories are created; replaces an existing file)",
                "parameters": [query("path", dataFile, "the file", required: true)],
                // No body is an empty file, as `canopy data put` of an empty file sends it.
                "requestBody": [
                    "required": false, "description": "the file's bytes (none: an empty file)",
                    "content": ["application/octet-stream": ["schema": ["type": "string", "format": "binary"]]],
                ],
                "responses":
                    ([
                        "201": ok(ref("DataEntry"), "Written"), "409": ok(ref("Error"), "A file or directory is in the way"),
                        "413": ok(ref("Error"), "Larger than the data store takes"), "503": ok(ref("Error"), "The server is shutting down; retry"),
                    ] as [String: Any])
                    .merging(errors) { a, _ in a },
            ],
        ],
        "/images": [
            "get": op(
                "listImages", "Images the caller may run: public ones and its tenant's (every tenant's for an admin)", responses: ["200": ok(page("Image"))])
        ],
        "/images/{name}": [
            "get": op("getImage", "An image of the catalog", params: imageParams, responses: ["200": ok(ref("Image"))]),
            "delete": op(
                "removeImage", "Remove an image: your tenant's, or a public one (admins)", params: imageParams,
                responses: (["204": ["description": "Removed"], "409": ok(ref("Error"), "Unfinished workloads run it")] as [String: Any])
                    .merging(forbidden) { a, _ in a }),
        ],
        "/images/import": [
            "post": upload("importImage", "Import a root-filesystem tarball as an image (streamed, at most 8 GiB)", nameRequired: true, created: ref("Image"))
        ],
        "/images/load": [
            "post": upload(
                "loadImage", "Load an image archive (docker save); each image it holds joins the catalog (streamed, at most 8 GiB)", nameRequired: false,
                created: page("Image"))
        ],
        "/images/pull": [
            "post": op(
                "pullImage", "Pull an image from its registry into the catalog; the answer streams progress lines, then the image", body: ref("PullImage"),
                responses: ([
                    "200": [
                        "description": "NDJSON: {\"progress\": LINE} lines, then {\"image\": IMAGE}, or {\"error\": ERROR} if the pull fails once started",
                        "content": ["application/x-ndjson": ["schema": ["type": "string"]]],
                    ],
                    "409": ok(ref("Error"), "No container engine on this server, or the name is taken"),
                ] as [String: Any]).merging(forbidden) { a, _ in a })
        ],
        "/whoami": ["get": op("whoami", "The caller's identity", responses: ["200": ok(ref("Principal"))])],
        "/openapi.json": [
            "get": ["operationId": "openapi", "summary": "This document", "security": [], "responses": ["200": ["description": "OpenAPI document"]]]
        ],
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

import CanopyCore
import CanopyServices
import Foundation
import Logging
import NIOCore
import NIOPosix
import NIOSSH
import Synchronization

/// One SSH session channel: a shell or a command in the task, through `ExecService`.
final class SessionHandler: ChannelInboundHandler {
    typealias InboundIn = SSHChannelData
    typealias OutboundOut = SSHChannelData

    /// What goes to the command's standard input, in order.
    enum Input: Sendable {
        case bytes([UInt8])
        case end
    }

    /// What a shell request runs: a login shell, bash where there is one.
    static let loginShell = ["/bin/sh", "-c", "if command -v bash >/dev/null 2>&1; then exec bash -l; else exec sh -l; fi"]
    /// What the sftp subsystem runs: OpenSSH's sftp-server, wherever the task's system has it (it speaks SFTP on
    /// its standard input and output, as under sshd).
    static let sftpServer = [
        "/bin/sh", "-c",
        "for p in /usr/lib/openssh/sftp-server /usr/libexec/openssh/sftp-server /usr/lib/ssh/sftp-server /usr/libexec/sftp-server /usr/lib/sftp-server; do [ -x \"$p\" ] && exec \"$p\"; done; echo 'canopy: this task has no sftp-server (Debian and Ubuntu: openssh-sftp-server; Fedora: openssh-server); scp -O works without it' >&2; exit 127",
    ]
    /// Input held before the command reads it; reading from the client pauses above this.
    static let maxPendingInput = 1 << 20

    let target: Login.Target
    let exec: ExecService
    let logger: Logger
    private var pty: (rows: Int, columns: Int)?
    private var started = false
    private let input: AsyncStream<Input>
    private let inputContinuation: AsyncStream<Input>.Continuation
    /// What the handler shares with the tasks that run the session.
    final class Shared: Sendable {
        let pending = Mutex(0)
        let session = Mutex<(any ExecSession)?>(nil)
        /// The channel is gone: a session that starts after this is ended at once.
        let closed = Mutex(false)
    }
    private let shared = Shared()

    init(target: Login.Target, exec: ExecService, logger: Logger) {
        self.target = target
        self.exec = exec
        self.logger = logger
        (input, inputContinuation) = AsyncStream<Input>.makeStream()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        inputContinuation.finish()
        shared.closed.withLock { $0 = true }
        if let session = shared.session.withLock({ $0 }) { Task { await session.terminate() } }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let message = unwrapInboundIn(data)
        guard case .channel = message.type, case .byteBuffer(var buffer) = message.data, let bytes = buffer.readBytes(length: buffer.readableBytes), !bytes.isEmpty
        else { return }
        let total = shared.pending.withLock { p in
            p += bytes.count
            return p
        }
        if total > Self.maxPendingInput { context.channel.setOption(ChannelOptions.autoRead, value: false).whenComplete { _ in } }
        inputContinuation.yield(.bytes(bytes))
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        switch event {
        case let request as SSHChannelRequestEvent.PseudoTerminalRequest:
            pty = (request.terminalRowHeight, request.terminalCharacterWidth)
            reply(context, request.wantReply, true)
        case let request as SSHChannelRequestEvent.EnvironmentRequest:
            // Accepted and not passed on: the task's environment is its own.
            reply(context, request.wantReply, true)
        case let request as SSHChannelRequestEvent.ShellRequest:
            reply(context, request.wantReply, start(context, command: Self.loginShell))
        case let request as SSHChannelRequestEvent.ExecRequest:
            reply(context, request.wantReply, start(context, command: ["/bin/sh", "-c", request.command]))
        case let request as SSHChannelRequestEvent.SubsystemRequest:
            guard request.subsystem == "sftp" else {
                logger.info("ssh subsystem refused", metadata: ["subsystem": "\(request.subsystem)"])
                return reply(context, request.wantReply, false)
            }
            // SFTP is a byte stream: no terminal, whatever pty-req said.
            pty = nil
            reply(context, request.wantReply, start(context, command: Self.sftpServer))
        case let request as SSHChannelRequestEvent.WindowChangeRequest:
            let size = (request.terminalRowHeight, request.terminalCharacterWidth)
            if let session = shared.session.withLock({ $0 }) {
                Task { await session.resize(rows: size.0, columns: size.1) }
            } else if pty != nil {
                pty = size
            }
        case ChannelEvent.inputClosed:
            inputContinuation.yield(.end)
        default:
            context.fireUserInboundEventTriggered(event)
        }
    }

    private func reply(_ context: ChannelHandlerContext, _ wanted: Bool, _ ok: Bool) {
        guard wanted else { return }
        if ok {
            context.triggerUserOutboundEvent(ChannelSuccessEvent(), promise: nil)
        } else {
            context.triggerUserOutboundEvent(ChannelFailureEvent(), promise: nil)
        }
    }

    /// Starts the command once per channel; its output, exit status and close follow on their own.
    private func start(_ context: ChannelHandlerContext, command: [String]) -> Bool {
        guard !started else { return false }
        started = true
        let request = ExecRequest(command: command, tty: pty != nil, rows: pty?.rows, columns: pty?.columns)
        let channel = context.channel
        let exec = exec
        let target = target
        let input = input
        let shared = shared
        let logger = logger
        Task { @Sendable in await SessionHandler.run(request, channel: channel, exec: exec, target: target, input: input, shared: shared, logger: logger) }
        return true
    }

    /// Runs the session: starts the command, feeds its input, sends its output, then its exit status.
    static func run(
        _ request: ExecRequest, channel: any Channel, exec: ExecService, target: Login.Target, input: AsyncStream<Input>, shared: Shared, logger: Logger
    ) async {
        let session: any ExecSession
        do {
            session = try await exec.start(target.principal, workloadID: target.workloadID, task: target.task, request: request)
        } catch {
            let message = (error as? CanopyError)?.message ?? "\(error)"
            var buffer = channel.allocator.buffer(capacity: message.utf8.count + 10)
            buffer.writeString("canopy: \(message)\r\n")
            try? await channel.writeAndFlush(SSHChannelData(type: .stdErr, data: .byteBuffer(buffer))).get()
            await Self.finish(channel, code: 1)
            return
        }
        shared.session.withLock { $0 = session }
        // The client left while the command was starting.
        if shared.closed.withLock({ $0 }) || !channel.isActive { await session.terminate() }
        logger.info("ssh session", metadata: ["workload.id": "\(target.workloadID)", "task": "\(target.task)", "tty": "\(request.tty)"])
        // Standard input, in order, with the client paused while too much waits.
        let feeder = Task {
            for await item in input {
                switch item {
                case .bytes(let bytes):
                    exec.noteInput(workloadID: target.workloadID)
                    await session.write(bytes)
                    let left = shared.pending.withLock { p in
                        p -= bytes.count
                        return p
                    }
                    if left <= SessionHandler.maxPendingInput {
                        channel.setOption(ChannelOptions.autoRead, value: true).whenSuccess { channel.read() }
                    }
                case .end:
                    await session.closeInput()
                }
            }
        }
        for await chunk in session.output {
            let data: SSHChannelData
            switch chunk {
            case .stdout(let b): data = SSHChannelData(type: .channel, data: .byteBuffer(ByteBuffer(bytes: b)))
            case .stderr(let b): data = SSHChannelData(type: .stdErr, data: .byteBuffer(ByteBuffer(bytes: b)))
            }
            do {
                try await channel.writeAndFlush(data).get()
            } catch {
                // The client is gone: so is the command.
                await session.terminate()
                break
            }
        }
        let code = await session.exitCode()
        feeder.cancel()
        await Self.finish(channel, code: code ?? 255)
    }

    /// Sends the exit status and end of file, then closes the channel.
    static func finish(_ channel: any Channel, code: Int) async {
        try? await channel.triggerUserOutboundEvent(SSHChannelRequestEvent.ExitStatus(exitStatus: code)).get()
        try? await channel.close(mode: .output).get()
        try? await channel.close().get()
    }
}

/// A forwarded connection (`direct-tcpip`): bytes both ways between the SSH channel and a socket connected to the
/// task's port, each side reading only while the other can take more.
enum Forwarding {
    static func start(sshChannel: any Channel, socket fd: Int32, onInput: @escaping @Sendable () -> Void) async throws {
        let tcp: any Channel
        do {
            // The socket's side is in place before its first read: a service that speaks first loses nothing.
            tcp = try await ClientBootstrap(group: sshChannel.eventLoop)
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(TCPSide(peer: sshChannel)) }
                }
                .withConnectedSocket(fd).get()
        } catch {
            close(fd)
            throw error
        }
        do {
            // (The channel is not active yet: it opens once this initializer has succeeded. One closed meanwhile
            // refuses the handler, and the socket is closed below.)
            try await sshChannel.eventLoop.submit {
                try sshChannel.pipeline.syncOperations.addHandler(SSHSide(peer: tcp, onInput: onInput))
            }.get()
            try await sshChannel.setOption(ChannelOptions.allowRemoteHalfClosure, value: true).get()
        } catch {
            tcp.close(promise: nil)
            throw error
        }
    }

    /// The SSH channel's side: data to the socket.
    final class SSHSide: ChannelInboundHandler {
        typealias InboundIn = SSHChannelData
        let peer: any Channel
        let onInput: @Sendable () -> Void
        init(peer: any Channel, onInput: @escaping @Sendable () -> Void) {
            self.peer = peer
            self.onInput = onInput
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            guard case .byteBuffer(let buffer) = unwrapInboundIn(data).data else { return }
            onInput()
            peer.writeAndFlush(buffer, promise: nil)
            if !peer.isWritable { context.channel.setOption(ChannelOptions.autoRead, value: false).whenComplete { _ in } }
        }

        func channelWritabilityChanged(context: ChannelHandlerContext) {
            peer.setOption(ChannelOptions.autoRead, value: context.channel.isWritable).whenComplete { _ in }
            if context.channel.isWritable { peer.read() }
        }

        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            if case ChannelEvent.inputClosed = event { peer.close(mode: .output, promise: nil) }
        }

        func channelInactive(context: ChannelHandlerContext) { peer.close(promise: nil) }
        func errorCaught(context: ChannelHandlerContext, error: any Error) { context.close(promise: nil) }
    }

    /// The socket's side: data to the SSH channel.
    final class TCPSide: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        let peer: any Channel
        init(peer: any Channel) { self.peer = peer }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            peer.writeAndFlush(SSHChannelData(type: .channel, data: .byteBuffer(unwrapInboundIn(data))), promise: nil)
            if !peer.isWritable { context.channel.setOption(ChannelOptions.autoRead, value: false).whenComplete { _ in } }
        }

        func channelWritabilityChanged(context: ChannelHandlerContext) {
            peer.setOption(ChannelOptions.autoRead, value: context.channel.isWritable).whenComplete { _ in }
            if context.channel.isWritable { peer.read() }
        }

        func channelInactive(context: ChannelHandlerContext) {
            // End of file once what is queued has gone out, then the channel: a download the task's server closes
            // after sending arrives whole.
            let peer = peer
            peer.close(mode: .output).whenComplete { _ in peer.close(promise: nil) }
        }
        func errorCaught(context: ChannelHandlerContext, error: any Error) { context.close(promise: nil) }
    }
}

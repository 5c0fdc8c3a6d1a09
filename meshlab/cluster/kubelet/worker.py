"""One pod's worker: the I/O shell around :func:`~meshlab.cluster.kubelet.lifecycle.plan`.

Like the kubelet's pod workers (``pkg/kubelet/pod_workers.go``), each pod bound to the node gets one task
that loops: look at the latest pod object and what its processes did, let the pure lifecycle decide,
start containers, record events, write the pod's status (only when it changed), then sleep until
something happens — the pod changes, a process exits, a probe result flips, or a back-off expires.
Probes run as small tasks per container instance. When the pod gets a ``deletionTimestamp`` the worker
runs ``preStop`` hooks, sends SIGTERM, sends SIGKILL after the grace period, writes the final status and
deletes the pod with ``gracePeriodSeconds: 0``, which removes it from the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from dataclasses import replace
from typing import Any

from meshlab.cluster.controllers.events import record_event
from meshlab.cluster.kubelet import lifecycle, podstatus, probing
from meshlab.cluster.kubelet.lifecycle import Record
from meshlab.cluster.kubelet.logs import instance_logs, parse_line
from meshlab.cluster.kubelet.probes import ProbeSpec, Tracker, kill_message, probes_of
from meshlab.cluster.kubelet.processes import ContainerProcess, with_parent_death_signal
from meshlab.cluster.kubelet.sandbox import LaunchFailure, NodeContext, Sandbox
from meshlab.errors import ApiError, Conflict, NotFound

log = logging.getLogger("meshlab.kubelet")

Obj = dict[str, Any]

CONFIG_RETRY = 1.0  # seconds between tries of a container whose configuration failed
MOUNT_RETRY = (0.5, 32.0)  # volume set-up retries back off from 0.5 s to 32 s (the kubelet: to 2m2s)
MIN_KILL_GRACE = 2.0  # the kubelet never kills with less (minimumGracePeriodInSeconds)
REFRESH_VOLUMES = 60.0
MESSAGE_LINES, MESSAGE_BYTES = 80, 2048  # FallbackToLogsOnError's share of the log


class PodWorker:
    def __init__(self, ctx: NodeContext, pod: Obj) -> None:
        self.ctx = ctx
        self.pod: Obj | None = pod
        self.last_pod: Obj = pod
        self.uid = str(pod["metadata"]["uid"])
        self.sandbox = Sandbox(ctx, pod)
        now = time.time()
        statuses = {s.get("name"): s for key in ("initContainerStatuses", "containerStatuses")
                    for s in (pod.get("status") or {}).get(key) or []}
        self.records: dict[str, Record] = {c["name"]: lifecycle.resumed(statuses.get(c["name"]), now)
                                           for c in self._containers(pod)}
        self.procs: dict[str, ContainerProcess] = {}
        self.probe_tasks: dict[str, list[asyncio.Task[None]]] = {}
        self.background: set[asyncio.Task[Any]] = set()
        self.events: list[lifecycle.Event] = []
        self.wake = asyncio.Event()
        self.retry_at: float | None = None
        self.task: asyncio.Task[None] | None = None
        self._written: tuple[Obj, Obj] | None = None  # (status computed, status stored) of our last write
        self._warned_isolation = False
        self._next_refresh = now + REFRESH_VOLUMES
        self._mount_retry = MOUNT_RETRY[0]

    @staticmethod
    def _containers(pod: Obj) -> list[Obj]:
        spec = pod.get("spec") or {}
        return [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]

    def container(self, name: str) -> Obj | None:
        return next((c for c in self._containers(self.last_pod) if c.get("name") == name), None)

    # -- driving ---------------------------------------------------------------------------------------------

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name=f"pod-worker-{self.uid}")

    def poke(self) -> None:
        """Something this pod may be waiting for changed (a ConfigMap, Secret, ServiceAccount): retry now."""
        timed = (lifecycle.CRASH_LOOP, lifecycle.ERR_IMAGE_PULL, lifecycle.IMAGE_PULL_BACKOFF)
        waiting = not self.sandbox.ready or any(r.waiting and r.waiting[0] not in timed for r in self.records.values())
        if waiting:
            self._mount_retry = MOUNT_RETRY[0]
            self.wake.set()

    def update(self, pod: Obj | None) -> None:
        self.pod = pod
        if pod is not None:
            self.last_pod = pod
        self.wake.set()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def _run(self) -> None:
        while True:
            self.wake.clear()
            pod = self.pod
            try:
                if pod is None or (pod.get("metadata") or {}).get("deletionTimestamp"):
                    await self._terminate(pod)
                    return
                wake_at = await self._sync(pod)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("pod %s: sync failed; retrying", self.uid)
                wake_at = time.time() + 1.0
            timeout = None if wake_at is None else max(wake_at - time.time(), 0.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout)

    async def _sync(self, pod: Obj) -> float | None:
        now = time.time()
        wakes: list[float] = []
        if not self.sandbox.ready:
            if not await self._prepare(pod):
                await self._write_status(pod)
                await self._flush_events(pod)
                delay, self._mount_retry = self._mount_retry, min(self._mount_retry * 2, MOUNT_RETRY[1])
                return now + delay
        elif self.sandbox.volume_paths and now >= self._next_refresh:
            self._next_refresh = now + REFRESH_VOLUMES
            self._spawn(self.sandbox.refresh(pod))
        if self.sandbox.volume_paths:
            wakes.append(self._next_refresh)
        result = lifecycle.plan(pod, self.records, now, self.ctx.policy)
        self.records = result.records
        self.events.extend(result.events)
        for name in result.stop:
            proc = self.procs.get(name)
            if proc is not None:
                self._spawn(self._kill(name, proc, f"Stopping container {name}"))
        self.retry_at = None
        for name in result.start:
            self._start(pod, name)
        await self._write_status(pod)
        await self._flush_events(pod)
        wakes += [t for t in (result.wake_at, self.retry_at) if t is not None]
        return min(wakes) if wakes else None

    async def _prepare(self, pod: Obj) -> bool:
        try:
            await self.sandbox.prepare(pod)
        except Exception as err:  # the volume manager's VolumeError, or an OS error making the sandbox
            reason = getattr(err, "reason", "FailedMount")
            self.events.append(lifecycle.Event("Warning", reason, getattr(err, "message", str(err))))
            return False
        if self.sandbox.isolation_weak() and not self._warned_isolation:
            self._warned_isolation = True
            self.events.append(lifecycle.Event("Warning", "MountIsolationUnavailable", self.sandbox.isolation_note))
        return True

    # -- containers ------------------------------------------------------------------------------------------

    def _start(self, pod: Obj, name: str) -> None:
        container = self.container(name)
        if container is None:
            return
        record = self.records.get(name, Record())
        now = time.time()
        try:
            launch = self.sandbox.launch(pod, container)
        except LaunchFailure as err:
            if record.waiting != (err.reason, err.message):
                self.events.append(lifecycle.Event("Warning", "Failed", f"Error: {err.message}", name))
            self.records[name] = replace(record, waiting=(err.reason, err.message))
            self.retry_at = now + CONFIG_RETRY
            return
        image = str(container.get("image", ""))
        self.events.append(lifecycle.Event("Normal", "Pulled", f'Container image "{image}" already present on machine',
                                           name))
        container_id = secrets.token_hex(32)
        log_dir = self.ctx.pod_log_dir(pod) / name
        log_path = log_dir / f"{record.instances}.log"
        try:
            proc = ContainerProcess.spawn(launch.argv, env=launch.env, cwd=launch.cwd, log_path=log_path,
                                          container_id=container_id)
        except OSError as err:
            message = _exec_error(launch.argv[0], err)
            self.events.append(lifecycle.Event("Warning", "Failed", f"Error: {message}", name))
            self.records[name] = lifecycle.failed_to_start(record, container_id, message, now)
            return
        for old in instance_logs(log_dir)[:-2]:  # keep the current and the previous instance's log
            old.unlink(missing_ok=True)
        self.ctx.guard.track(proc.pid, pod=self.uid, container=name)
        self.ctx.watched_logs[log_path] = proc.log
        found = probes_of(container)
        self.records[name] = lifecycle.started(record, container_id, proc.started_at,
                                               startup_probe="startup" in found,
                                               readiness_probe="readiness" in found)
        self.procs[name] = proc
        self.events.append(lifecycle.Event("Normal", "Created", f"Created container: {name}", name))
        self.events.append(lifecycle.Event("Normal", "Started", f"Started container {name}", name))
        self.probe_tasks[name] = [asyncio.create_task(self._probe(name, proc, spec, container))
                                  for spec in found.values()]
        self._spawn(self._watch(name, proc, log_path))
        post_start = (container.get("lifecycle") or {}).get("postStart")
        if post_start:
            self._spawn(self._post_start(name, proc, post_start, container))

    async def _watch(self, name: str, proc: ContainerProcess, log_path: Any) -> None:
        code = await proc.exit_code
        self.ctx.guard.untrack(proc.pid)
        for task in self.probe_tasks.pop(name, []):
            task.cancel()
        message = ""
        container = self.container(name) or {}
        if code != 0 and container.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            await proc.drained(0.5)
            message = _log_tail(log_path)
        if self.procs.get(name) is proc:
            del self.procs[name]
            self.records[name] = lifecycle.exited(self.records.get(name, Record()), code, time.time(),
                                                  message=message)
        await proc.drained(2.0)
        self.ctx.watched_logs.pop(log_path, None)
        self.wake.set()

    async def _kill(self, name: str, proc: ContainerProcess, message: str, grace: float | None = None) -> None:
        """Stop one container: event, preStop hook, SIGTERM, SIGKILL after the grace period."""
        container = self.container(name) or {}
        if grace is None:
            grace = float((self.last_pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30))
        self.events.append(lifecycle.Event("Normal", "Killing", message, name))
        self._spawn(self._flush_events(self.last_pod))
        deadline = time.monotonic() + max(grace, MIN_KILL_GRACE)
        pre_stop = (container.get("lifecycle") or {}).get("preStop")
        if pre_stop and proc.running:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._handler(name, pre_stop, container, grace), max(grace, 0.1))
        await proc.stop(max(deadline - time.monotonic(), 0.0))

    async def _handler(self, name: str, handler: Obj, container: Obj, timeout: float) -> tuple[bool, str]:
        async def run_exec(command: list[str] | Any, limit: float) -> tuple[int | None, bytes]:
            return await self.run_in_container(name, list(command), limit)

        return await probing.run(handler, pod_ip=self.sandbox.pod_ip, container=container, timeout=timeout,
                                 run_exec=run_exec)

    async def _post_start(self, name: str, proc: ContainerProcess, handler: Obj, container: Obj) -> None:
        ok, message = await self._handler(name, handler, container, 30.0)
        if not ok and proc.running:
            self.events.append(lifecycle.Event("Warning", "FailedPostStartHook", "PostStartHook failed", name))
            await self._kill(name, proc, f"FailedPostStartHook: {message}")

    async def _probe(self, name: str, proc: ContainerProcess, spec: ProbeSpec, container: Obj) -> None:
        await asyncio.sleep(max(proc.started_at + spec.initial_delay - time.time(), 0.0))
        tracker = Tracker.initial(spec.kind)
        while proc.running:
            record = self.records.get(name, Record())
            started = record.running is not None and record.running.started
            if spec.kind == "startup" and started:
                return
            if spec.kind == "startup" or started:
                ok, message = await self._handler(name, spec.handler, container, spec.timeout)
                if not proc.running or self.procs.get(name) is not proc:
                    return
                if not ok:
                    self.events.append(lifecycle.Event("Warning", "Unhealthy", f"{spec.title} probe failed: {message}",
                                                       name))
                    self._spawn(self._flush_events(self.last_pod))
                new = tracker.observe(ok, spec)
                if new.result != tracker.result:
                    self._probe_changed(name, proc, spec, new)
                tracker = new
                if tracker.on_hold:
                    return
            await asyncio.sleep(spec.period)

    def _probe_changed(self, name: str, proc: ContainerProcess, spec: ProbeSpec, tracker: Tracker) -> None:
        record = self.records.get(name, Record())
        if spec.kind == "readiness":
            self.records[name] = lifecycle.probed(record, ready=tracker.result is True)
        elif spec.kind == "startup" and tracker.result:
            has_readiness = "readiness" in probes_of(self.container(name) or {})
            self.records[name] = lifecycle.probed(record, started=True, ready=not has_readiness)
        elif tracker.result is False:  # liveness or startup failure: restart the container
            self._spawn(self._kill(name, proc, kill_message(name, spec.kind), spec.termination_grace))
        self.wake.set()

    async def run_in_container(self, name: str, command: list[str], timeout: float) -> tuple[int | None, bytes]:
        """Run a command in a container's environment (exec probes and hooks); (exit code | None, output)."""
        proc = await self.exec_process(name, command, stdin=False, merge_output=True)
        try:
            async with asyncio.timeout(timeout):
                output, _ = await proc.communicate()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            return None, b""
        return proc.returncode, output[-10240:]

    async def exec_process(self, name: str, command: list[str], *, stdin: bool,
                           merge_output: bool = False) -> asyncio.subprocess.Process:
        """Start a process inside a running container (``kubectl exec``); raises ``LookupError``."""
        proc = self.procs.get(name)
        launch = self.sandbox.exec_launch(name, command)
        if proc is None or not proc.running or launch is None:
            raise LookupError(f'container not found ("{name}")')
        pipe = asyncio.subprocess.PIPE
        argv, preexec = with_parent_death_signal(launch.argv)
        options: dict[str, Any] = {
            "stdin": pipe if stdin else asyncio.subprocess.DEVNULL, "stdout": pipe,
            "stderr": asyncio.subprocess.STDOUT if merge_output else pipe, "env": launch.env, "cwd": launch.cwd,
            "preexec_fn": preexec}
        try:  # join the container's process group: exec'd processes die with the container
            return await asyncio.create_subprocess_exec(*argv, process_group=proc.pid, **options)
        except PermissionError:
            return await asyncio.create_subprocess_exec(*argv, process_group=0, **options)

    # -- status, events, termination ----------------------------------------------------------------------

    async def _write_status(self, pod: Obj | None, *, terminal: bool = False) -> None:
        rt = self.ctx.rest.registry.lookup("", "v1", "pods")
        assert rt is not None
        for _ in range(3):
            meta = (pod or self.last_pod)["metadata"]
            found = self.ctx.rest.store.get(self.ctx.rest.key(rt, meta.get("namespace", ""), meta["name"]))
            if found is None or found[1]["metadata"].get("uid") != self.uid:
                return
            current = found[1]
            status = podstatus.pod_status(current, self.records, pod_ip=self.sandbox.pod_ip,
                                          host_ip=self.ctx.host_ip, now=time.time(),
                                          sandbox_ready=self.sandbox.ready and not terminal, terminal=terminal)
            stored = current.get("status") or {}
            if status == stored or self._written == (status, stored):
                return
            try:
                written = await self.ctx.rest.update(rt, meta.get("namespace", ""), meta["name"],
                                                     {**current, "status": status}, self.ctx.opts,
                                                     subresource="status")
            except Conflict:
                continue
            except NotFound:
                return
            self._written = (status, written.get("status") or {})
            return

    async def _flush_events(self, pod: Obj) -> None:
        events, self.events = self.events, []
        for event in events:
            await record_event(self.ctx.rest, pod, type=event.type, reason=event.reason, message=event.message,
                               component="kubelet", host=self.ctx.node_name)

    async def _terminate(self, pod: Obj | None) -> None:
        """Stop every container (deletion or removal), write the final status, delete the pod."""
        meta = (pod or {}).get("metadata") or {}
        if pod is None:
            grace = MIN_KILL_GRACE
        else:
            grace = float(meta.get("deletionGracePeriodSeconds",
                                   (pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30)))
        await self.stop_containers(grace, reason="Stopping container {name}")
        if pod is not None:
            await self._write_status(pod, terminal=True)
            await self._flush_events(pod)
            rt = self.ctx.rest.registry.lookup("", "v1", "pods")
            assert rt is not None
            with contextlib.suppress(ApiError):
                await self.ctx.rest.delete(rt, meta.get("namespace", ""), meta["name"],
                                           {"gracePeriodSeconds": 0, "preconditions": {"uid": self.uid}},
                                           self.ctx.opts)
        await self.sandbox.teardown(self.last_pod, remove=True)

    async def stop_containers(self, grace: float, *, reason: str) -> None:
        for tasks in self.probe_tasks.values():
            for task in tasks:
                task.cancel()
        stops = [self._kill(name, proc, reason.format(name=name), grace) for name, proc in list(self.procs.items())]
        await asyncio.gather(*stops, return_exceptions=True)
        for proc in list(self.procs.values()):
            await proc.drained(1.0)

    async def shutdown(self, grace: float) -> None:
        """The kubelet is stopping: stop the loop and the containers, keep the pod and its files."""
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        self.events.clear()
        for tasks in self.probe_tasks.values():
            for task in tasks:
                task.cancel()
        await asyncio.gather(*(proc.stop(grace) for proc in self.procs.values()), return_exceptions=True)
        for task in list(self.background):
            task.cancel()
        await asyncio.gather(*self.background, return_exceptions=True)


def _exec_error(executable: str, err: OSError) -> str:
    """What containerd says when a container's command cannot be executed."""
    if isinstance(err, FileNotFoundError) and err.filename in (executable, None):
        return f'exec: "{executable}": executable file not found in $PATH'
    if isinstance(err, PermissionError):
        return f'exec: "{executable}": permission denied'
    return f"failed to start container: {err}"


def _log_tail(path: Any) -> str:
    """The end of a container's log, for ``terminationMessagePolicy: FallbackToLogsOnError``."""
    try:
        raw = path.read_bytes().splitlines()[-MESSAGE_LINES:]
    except OSError:
        return ""
    text = b"".join(line.render(False) for item in raw if (line := parse_line(item)))
    return text[-MESSAGE_BYTES:].decode(errors="replace")

# The channel to the host broker, for the agents (sourced). ask LINE: one request, one answer
# line on stdout (empty after a timeout). The port reads EOF while no host end is connected:
# every ask opens it afresh. One ask at a time across agents (flock).
port() {
    for p in /sys/class/virtio-ports/*; do
        [ "$(cat "$p/name" 2>/dev/null)" = org.nnos.broker ] && { echo "/dev/${p##*/}"; return 0; }
    done
    return 1
}
ask() {
    dev=$(port) || return 1
    (
        flock 9
        exec 3<>"$dev"
        printf '%s\n' "$1" >&3
        read -r -t "${ASK_TIMEOUT:-5}" answer <&3 && printf '%s\n' "$answer"
        exec 3>&-
    ) 9>/run/channel.lock
}
say() { echo "agent $AGENT: $*"; }

# The channel to the host broker, for the agents (sourced). ask LINE: one request, one answer
# line on stdout (empty after a timeout). The port reads EOF while no host end is connected and
# takes one opener at a time: every ask opens it afresh, one ask at a time across agents (a
# mkdir lock: this busybox has no flock).
port() {
    for p in /sys/class/virtio-ports/*; do
        [ "$(cat "$p/name" 2>/dev/null)" = org.nnos.broker ] && { echo "/dev/${p##*/}"; return 0; }
    done
    return 1
}
ask() {
    dev=$(port) || return 1
    until mkdir /run/channel.lock 2>/dev/null; do usleep 20000; done
    (
        exec 3<>"$dev"
        printf '%s\n' "$1" >&3
        read -r -t "${ASK_TIMEOUT:-5}" answer <&3 && printf '%s\n' "$answer"
        exec 3>&-
    )
    rmdir /run/channel.lock
}
# fetch URL [wget args]: busybox wget with a deadline (its own -T crashes the static build)
fetch() {
    url=$1; shift
    timeout "${FETCH_TIMEOUT:-10}" wget -q "$@" "$url"
}
say() { echo "agent $AGENT: $*"; }

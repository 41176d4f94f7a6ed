/* querycap DEVICE: print a V4L2 node's driver, card and device caps.
 * The lab's arm64 guest cannot run the host's (x86) v4l2-ctl; `lab setup
 * --arch arm64` cross-builds this instead. It goes through
 * syscall(SYS_ioctl), as the Rust `v4l` crate does. The cap names are
 * v4l2-ctl's, so guest-selftest.sh reads either. */
#include <fcntl.h>
#include <linux/videodev2.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv) {
    static const struct { unsigned int bit; const char *name; } caps[] = {
        {V4L2_CAP_VIDEO_CAPTURE, "Video Capture"},
        {V4L2_CAP_VIDEO_OUTPUT, "Video Output"},
        {V4L2_CAP_VIDEO_CAPTURE_MPLANE, "Video Capture Multiplanar"},
        {V4L2_CAP_VIDEO_OUTPUT_MPLANE, "Video Output Multiplanar"},
        {V4L2_CAP_VIDEO_M2M_MPLANE, "Video Memory-to-Memory Multiplanar"},
        {V4L2_CAP_VIDEO_M2M, "Video Memory-to-Memory"},
        {V4L2_CAP_META_CAPTURE, "Metadata Capture"},
        {V4L2_CAP_STREAMING, "Streaming"},
    };
    struct v4l2_capability c = {0};
    if (argc != 2) {
        fprintf(stderr, "usage: querycap /dev/videoN\n");
        return 2;
    }
    int fd = open(argv[1], O_RDWR);
    if (fd < 0 || syscall(SYS_ioctl, fd, VIDIOC_QUERYCAP, &c) < 0) {
        perror(argv[1]);
        return 1;
    }
    unsigned int dc = (c.capabilities & V4L2_CAP_DEVICE_CAPS) ? c.device_caps : c.capabilities;
    printf("driver: %.16s\ncard: %.32s\nbus: %.32s\n", c.driver, c.card, c.bus_info);
    for (unsigned int i = 0; i < sizeof caps / sizeof caps[0]; i++)
        if (dc & caps[i].bit) printf("cap: %s\n", caps[i].name);
    return 0;
}

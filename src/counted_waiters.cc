#include "counted_waiters.h"

#include <climits>

#include "log.h"

namespace jobbridge {

int TakeBackCountedSurplus(Endpoint* endpoint, int held, int* counted_surplus) {
  std::string err;
  int stocked = endpoint->Stocked(&err);
  if (stocked < 0 || stocked <= held) {
    if (stocked < 0) LogWarning(err);
    return stocked;
  }
  int got = endpoint->TakeBack(stocked - held, &err);
  if (got < 0) {
    LogWarning(err);
    return -1;
  }
  if (got > 0 && *counted_surplus == 0) {
    LogWarning("a ROBUST_JOBSERVER client gave back " + std::to_string(got) +
               " unit(s) it never took (a semop +1 without a -1 before it); taken back out of " +
               "the semaphore, so no more than the budget runs (further surplus is taken " +
               "back without a word, and counted at exit)");
  }
  *counted_surplus += got;
  int left = endpoint->Stocked(&err);
  return left < 0 ? 0 : left;
}

bool ReportCountBack(int back, int held, int counted_surplus) {
  if (back < held) {
    LogWarning(std::to_string(held - back) + " of " + std::to_string(held) +
               " slot(s) given to ROBUST_JOBSERVER clients did not come back: a client still " +
               "holds them (it runs outside the tree); the semaphore is removed, so its next " +
               "semop fails (EIDRM)");
  } else if (back > held) {
    LogWarning("the ROBUST_JOBSERVER semaphore held " + std::to_string(back - held) +
               " unit(s) more than the " + std::to_string(held) +
               " it was given: a client gave back units it never took");
  }
  if (counted_surplus > 0) {
    LogWarning("ROBUST_JOBSERVER clients gave back " + std::to_string(counted_surplus) +
               " unit(s) they never took during the run; they were taken back out, and until " +
               "each was, more jobs than the budget could run");
  }
  return back == held && counted_surplus == 0;
}

bool CountBackAll(Endpoint* endpoint, int held, int counted_surplus) {
  std::string err;
  int back = endpoint->TakeBack(INT_MAX, &err);
  if (back < 0) {
    LogWarning(err);
    back = 0;
  }
  return ReportCountBack(back, held, counted_surplus);
}

}  // namespace jobbridge
